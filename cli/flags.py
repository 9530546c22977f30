"""Pass options as CLI flags, read from the pass registry (a new pass gets its flags with no
edit here). With a model named, `xopt export MODEL --help` lists only the passes that model's
variants use (plus the engine pass, which `--engine` adds to any model), with its own defaults."""
from __future__ import annotations

import argparse
from typing import Any


def _prefix(pass_name: str) -> str:
    return pass_name.replace("-", "_")


def _model_defaults(model: str | None) -> dict[str, dict[str, list[tuple[str, Any]]]] | None:
    """pass -> option -> [(variant, value)] as the model's variants set them; None: no model."""
    if not model:
        return None
    from xopt.errors import UserError
    from xopt.registry import get_model

    try:
        spec = get_model(model)
    except UserError:
        return None  # the command itself reports the unknown model
    used: dict[str, dict[str, list[tuple[str, Any]]]] = {"engine": {}}
    users: dict[str, int] = {}
    for variant in spec.variants.values():
        for name, opts in variant.passes:
            users[name] = users.get(name, 0) + 1
            per_option = used.setdefault(name, {})
            for key, value in opts.items():
                per_option.setdefault(key, []).append((variant.name, value))
    for name, per_option in used.items():  # set by every variant that runs the pass, one value: say it once
        for key, given in per_option.items():
            if len(given) == users.get(name) and len({repr(v) for _, v in given}) == 1:
                per_option[key] = [("", given[0][1])]
    return used


def add_pass_options(parser: argparse.ArgumentParser, model: str | None = None) -> None:
    from xopt.optimize.base import all_passes

    used = _model_defaults(model)
    title = "optimization pass options (override the model spec's defaults)"
    group = parser.add_argument_group(title if used is None else f"{title}; the passes {model}'s variants use")
    for p in all_passes():
        if used is not None and p.name not in used:
            continue
        for opt in p.options.options:
            given = (used or {}).get(p.name, {}).get(opt.name)
            spec_default = None
            if given:
                spec_default = f"{model}: " + ", ".join(f"{variant}={v!r}" if variant else repr(v)
                                                        for variant, v in given)
            opt.add_to(group, _prefix(p.name), spec_default=spec_default)


def pass_options(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """pass -> the options given on the command line."""
    from xopt.optimize.base import all_passes

    out = {}
    for p in all_passes():
        given = p.options.from_namespace(args, _prefix(p.name))
        if given:
            out[p.name] = given
    return out


def model_in(argv: list[str], command: str) -> str | None:
    """The MODEL of `xopt [-q] COMMAND MODEL ...`, before argparse has run (for --help)."""
    rest = [a for a in argv if a not in ("-q", "--quiet")]
    if len(rest) >= 2 and rest[0] == command and not rest[1].startswith("-"):
        return rest[1]
    return None
