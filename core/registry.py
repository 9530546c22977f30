"""One registry type for models, optimization passes and backends.

Each registry discovers its items by importing the modules of one package (those not starting
with `_`) and, for models, the `xopt.models` entry-point group, so a separate distribution can
add a model without touching xopt. A module or entry point that fails to import is not
dropped silently: it is listed as unavailable, with its error, by `xopt list` and by `get`.
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import inspect
import pkgutil
import sys
from typing import Callable, Generic, Iterable, TypeVar

from xopt.errors import InternalError, UnknownChoiceError, UserError
from xopt.spec import ModelSpec

T = TypeVar("T")


class DuplicateError(InternalError):
    """Two different objects claim one name: which one runs would depend on import order."""


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str, *, group: str | None = None, skip: Iterable[str] = (),
                 name_of: Callable[[T], str] = lambda item: item.name, packages_only: bool = False):
        self.kind = kind
        self.package = package
        self.group = group
        self.skip = set(skip)
        self.name_of = name_of
        self.packages_only = packages_only  # models are folders; passes and backends are modules
        self.items: dict[str, T] = {}
        self.failures: dict[str, str] = {}  # name -> why it could not be imported
        self.origins: dict[str, str] = {}  # name -> "module:attr" of items registered from outside the package
        self._discovered = False

    def register(self, item: T) -> T:
        name = self.name_of(item)
        if name in self.items and self.items[name] is not item:
            raise DuplicateError(f"{self.kind} {name!r} registered twice "
                                 f"({type(self.items[name]).__module__} and {type(item).__module__})")
        self.items[name] = item
        self.failures.pop(name, None)
        caller = inspect.stack()[1].frame.f_globals.get("__name__", "")
        if caller != __name__ and not caller.startswith(self.package + "."):
            # registered by hand (a test model, a plug-in): a measurement process registers it again
            origin = _origin(item, caller)
            if origin:
                self.origins[name] = origin
        return item

    def replay(self, origins: dict[str, str]) -> None:
        """Register again, in a fresh process, what `origins` (another process's) names."""
        from xopt.spec import resolve

        for name, ref in origins.items():
            if name not in self.items:
                obj = resolve(ref[:-2]) if ref.endswith("()") else resolve(ref)
                self.register(obj() if ref.endswith("()") else obj)

    def discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True  # first, so a module importing the registry back does not recurse
        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if info.name.startswith("_") or info.name in self.skip or (self.packages_only and not info.ispkg):
                continue
            try:
                importlib.import_module(f"{self.package}.{info.name}")
            except Exception as exc:  # shown by `xopt list`; a broken plug-in must not hide the others
                self.failures.setdefault(info.name, _why(exc))
        for ep in md.entry_points(group=self.group) if self.group else ():
            try:
                loaded = ep.load()
            except Exception as exc:  # same: listed as unavailable with its error
                self.failures.setdefault(ep.name, f"entry point {ep.value}: {_why(exc)}")
                continue
            if not isinstance(loaded, type(importlib)):  # a module registers itself on import
                self.register(loaded)

    def get(self, name: str) -> T:
        if name not in self.items:
            self.discover()
        if name in self.items:
            return self.items[name]
        if name in self.failures:
            raise UserError(f"{self.kind} {name} is unavailable here ({self.failures[name]})",
                            "install what it needs (see xopt list)")
        raise UnknownChoiceError(self.kind, name, self.items)

    def all(self) -> list[T]:
        self.discover()
        return [self.items[k] for k in sorted(self.items)]

    def unavailable(self) -> dict[str, str]:
        self.discover()
        return {k: v for k, v in sorted(self.failures.items()) if k not in self.items}


def _origin(item, caller: str) -> str | None:
    """A "module:attr" that gives `item` back in another process: an attribute of the module
    that registered it (or of its class's module), else its class, called with no arguments."""
    for mod_name in (caller, type(item).__module__):
        mod = sys.modules.get(mod_name)
        for attr, value in vars(mod).items() if mod else ():
            if value is item:
                return f"{mod_name}:{attr}"
    cls = type(item)
    if "<locals>" not in cls.__qualname__ and cls.__module__ != "builtins":
        return f"{cls.__module__}:{cls.__qualname__}()"
    return None


def _why(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]


# third-party models: an entry point in the group "xopt.models" naming a ModelSpec or a module
# that registers one, e.g. `[project.entry-points."xopt.models"] mymodel = "mypkg.spec:SPEC"`
MODELS: Registry[ModelSpec] = Registry("model", "xopt.models", group="xopt.models", packages_only=True)
register = MODELS.register
get_model = MODELS.get
list_models = MODELS.all
