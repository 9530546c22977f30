"""Typed options: one declaration drives the CLI flag, the default and the manifest entry."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any, Sequence

from xopt.errors import UserError

_TYPES = {"bool": bool, "int": int, "float": float, "str": str, "list": list}


@dataclass(frozen=True)
class Option:
    name: str
    type: str  # one of _TYPES
    default: Any
    description: str
    choices: Sequence[str] | None = None
    cli: bool = True  # False: set by a dedicated CLI flag instead (e.g. --engine picks the engine backend)

    def flag(self, prefix: str) -> str:
        return f"--{prefix.replace('_', '-')}-{self.name.replace('_', '-')}"

    def dest(self, prefix: str) -> str:
        return f"{prefix}_{self.name}".replace("-", "_")

    def parse(self, value: Any) -> Any:
        if value is None:
            return self.default
        kind = _TYPES[self.type]
        try:
            if kind is bool:
                if isinstance(value, str):
                    lowered = value.lower()
                    if lowered not in ("1", "0", "true", "false", "yes", "no"):
                        raise ValueError(value)
                    return lowered in ("1", "true", "yes")
                return bool(value)
            if kind is list:
                if isinstance(value, str):
                    return [v for v in value.split(",") if v]
                return list(value)
            out = kind(value)
        except (TypeError, ValueError) as exc:
            raise UserError(f"option {self.name} expects {self.type}, got {value!r}", f"see --help for {self.name}") from exc
        if self.choices and out not in self.choices:
            raise UserError(f"option {self.name} must be one of {', '.join(self.choices)}, got {out!r}")
        return out

    def add_to(self, parser: argparse.ArgumentParser, prefix: str, spec_default: str | None = None) -> None:
        """`spec_default`: what the model's variants set instead of the pass default, for --help."""
        if not self.cli:
            return
        default = f"default: {self.default!r}" + (f"; {spec_default}" if spec_default else "")
        help_text = f"{self.description} ({default})".replace("%", "%%")
        if self.type == "bool":
            parser.add_argument(self.flag(prefix), dest=self.dest(prefix), action=argparse.BooleanOptionalAction,
                                default=None, help=help_text)
        else:
            parser.add_argument(self.flag(prefix), dest=self.dest(prefix), default=None, help=help_text,
                                choices=self.choices, metavar=self.type.upper())


@dataclass
class OptionSet:
    options: list[Option] = field(default_factory=list)

    def resolve(self, given: dict[str, Any] | None) -> dict[str, Any]:
        given = dict(given or {})
        known = {o.name for o in self.options}
        unknown = set(given) - known
        if unknown:
            raise UserError(f"unknown option(s) {', '.join(sorted(unknown))}", f"valid: {', '.join(sorted(known))}")
        return {o.name: o.parse(given.get(o.name)) for o in self.options}

    def from_namespace(self, ns: argparse.Namespace, prefix: str) -> dict[str, Any]:
        return {o.name: getattr(ns, o.dest(prefix)) for o in self.options
                if o.cli and getattr(ns, o.dest(prefix), None) is not None}
