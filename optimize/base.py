"""The pass interface: an optimization pass takes an ONNX path and typed options and
writes a new ONNX (or engine) path. Passes know nothing about models beyond what the
`PassContext` hands them from the spec.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from xopt.errors import UnknownChoiceError
from xopt.options import Option, OptionSet


@dataclass
class PassContext:
    """What a pass may know about the model: scopes, calibration data, the device profile."""

    model: str
    scopes: dict[str, list[str]] = field(default_factory=dict)
    calibration: Callable[[int], Iterable[dict]] | None = None  # n -> feeds
    profile: Any = None  # xopt.profiles.DeviceProfile
    workdir: Path | None = None
    cache_dir: Path | None = None
    extra: dict = field(default_factory=dict)


class Pass:
    name: str = ""
    description: str = ""
    options: OptionSet = OptionSet()
    output_suffix: str = ".onnx"

    def apply(self, src: Path, dst: Path, opts: dict[str, Any], ctx: PassContext) -> dict:
        """Write the transformed artifact to `dst`; return facts for the manifest."""
        raise NotImplementedError


_PASSES: dict[str, Pass] = {}


def register_pass(p: Pass) -> Pass:
    _PASSES[p.name] = p
    return p


def _discover() -> None:
    import importlib
    import pkgutil

    import xopt.optimize as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name not in ("base", "pipeline") and not info.name.startswith("_"):
            importlib.import_module(f"{pkg.__name__}.{info.name}")


def get_pass(name: str) -> Pass:
    if name not in _PASSES:
        _discover()
    if name not in _PASSES:
        raise UnknownChoiceError("optimization pass", name, _PASSES)
    return _PASSES[name]


def all_passes() -> list[Pass]:
    _discover()
    return [_PASSES[k] for k in sorted(_PASSES)]


__all__ = ["Pass", "PassContext", "Option", "OptionSet", "register_pass", "get_pass", "all_passes"]
