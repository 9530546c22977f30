"""The model registry: the one way the CLI, runtime and tests find models.

Model packages live in `xopt.models`; each calls `register(spec)` at import.
Discovery walks that package, so adding a model touches no generic code.
"""
from __future__ import annotations

import importlib
import pkgutil

from xopt.errors import UnknownChoiceError
from xopt.spec import ModelSpec

_REGISTRY: dict[str, ModelSpec] = {}
_DISCOVERED = False


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY and _REGISTRY[spec.name] is not spec:
        raise ValueError(f"model {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    pkg = importlib.import_module("xopt.models")  # by name: generic code never imports a model

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.ispkg and not info.name.startswith("_"):
            importlib.import_module(f"{pkg.__name__}.{info.name}")
    _DISCOVERED = True


def get_model(name: str) -> ModelSpec:
    _discover()
    if name not in _REGISTRY:
        raise UnknownChoiceError("model", name, _REGISTRY)
    return _REGISTRY[name]


def list_models() -> list[ModelSpec]:
    _discover()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]
