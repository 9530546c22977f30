"""One small interface for every backend: load, run, close, and its own timings."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from xopt.errors import UserError
from xopt.registry import Registry


@dataclass
class Timings:
    load_ms: float = 0.0  # session creation / engine deserialisation
    build_ms: float = 0.0  # engine build, when the backend builds (0 for a cache hit)
    first_run_ms: float | None = None
    run_ms: list[float] = field(default_factory=list)  # host wall time per run after the first
    device_ms: list[float] = field(default_factory=list)  # device-side time (CUDA events), where measured
    cache_hit: bool | None = None
    deserialize_ms: float | None = None  # engine backends: deserialisation, part of load_ms
    context_ms: float | None = None  # engine backends: execution-context creation, part of load_ms

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class Session:
    """A loaded artifact. Subclasses implement `_load`, `_run` and `_close`."""

    backend = ""

    def __init__(self, path, **options):
        self.path = path
        self.options = options
        self.timings = Timings()
        self.input_names: list[str] = []
        self.output_names: list[str] = []
        # name -> shape (ints, or a str for a symbolic dimension) where the backend knows it
        self.input_shapes: dict[str, list] = {}
        self.output_shapes: dict[str, list] = {}
        self.providers: list[str] = []
        t0 = time.perf_counter()
        self._load(path, **options)
        self.timings.load_ms += (time.perf_counter() - t0) * 1e3

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise UserError(f"missing input(s) {', '.join(missing)} for {self.path}",
                            f"the graph expects {', '.join(self.input_names)}")
        t0 = time.perf_counter()
        out = self._run({n: feeds[n] for n in self.input_names})
        ms = (time.perf_counter() - t0) * 1e3
        if self.timings.first_run_ms is None:
            self.timings.first_run_ms = ms
        else:
            self.timings.run_ms.append(ms)
        return out

    def close(self) -> None:
        self._close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def info(self) -> dict:
        return {"backend": self.backend, "path": str(self.path), "providers": self.providers}

    # subclass hooks
    def _load(self, path, **options) -> None:
        raise NotImplementedError

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _close(self) -> None:
        pass


@dataclass
class Backend:
    name: str
    session: Callable[..., Session]
    probe: Callable[[], tuple[bool, str]]  # (usable here, why not)
    artifact: str = "onnx"  # which artifact it loads: onnx | engine | torch
    description: str = ""
    device: str = "cpu"  # where its tensors live: cpu | cuda (the memory basis follows it)


BACKENDS: Registry[Backend] = Registry("backend", "xopt.runtime.backends", skip=("base",))
register_backend = BACKENDS.register
get_backend = BACKENDS.get
all_backends = BACKENDS.all
