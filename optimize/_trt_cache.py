"""The engine cache: one serialized engine per (ONNX sha256, TensorRT flavour and version,
target compute capability, precision, shapes, workspace, calibration cache), so a second
export of the same graph for the same target is a copy, not a build.

Layout of the cache directory (default ~/.cache/xopt/engines, or `<cache_dir>/engines`):
``<key>.engine`` + ``<key>.engine.json`` (the engine's metadata sidecar) + ``index.json``
(key -> summary, for people and `xopt` listings). Every write is atomic and happens under
the directory's lock, so concurrent exports never see a half-written engine.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Iterator

from xopt.atomic import atomic_path, dir_lock, write_json
from xopt.cache import cache_root
from xopt.hashing import sha256_file
from xopt.runtime import engine_meta

INDEX = "index.json"
# built_on_gpu: full TensorRT picks its kernels by timing them on the GPU that builds, so an
# engine built on an H100 is not the one an RTX 3060 would have built (None for TensorRT-RTX).
KEY_FIELDS = ("onnx_sha256", "flavour", "trt_version", "compute_capabilities", "hardware_compatibility",
              "precision", "shapes", "workspace_mb", "calibration_cache_sha256", "optimization_level",
              "target_sm", "built_on_gpu")


def default_root(cache_dir: str | Path | None = None) -> Path:
    return cache_root(cache_dir) / "engines"


def cache_key(fields: dict) -> str:
    """A stable key over KEY_FIELDS; any other field is ignored so facts can grow freely."""
    canonical = json.dumps({k: fields.get(k) for k in KEY_FIELDS}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


class EngineCache:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def engine_path(self, key: str) -> Path:
        return self.root / f"{key}.engine"

    @contextlib.contextmanager
    def locked(self) -> Iterator["EngineCache"]:
        with dir_lock(self.root):
            yield self

    def lookup(self, key: str) -> dict | None:
        """The cached engine's metadata if present and intact; a damaged entry is dropped (rebuilt)."""
        path = self.engine_path(key)
        side = engine_meta.sidecar_path(path)
        if not path.exists() or not side.exists():
            return None
        try:
            meta = json.loads(side.read_text(encoding="utf-8"))
            intact = meta.get("key") == key and sha256_file(path) == meta.get("engine_sha256")
        except (OSError, json.JSONDecodeError):
            intact = False
        if not intact:
            self._drop(key)
            return None
        self._touch(key)
        return meta

    def new_engine_tmp(self, key: str) -> Path:
        """Where the build worker writes; same filesystem as the entry, so `store` is a rename."""
        self.root.mkdir(parents=True, exist_ok=True)
        return self.root / f".{key}.engine.{os.getpid()}.partial"

    def store(self, key: str, built: Path, meta: dict) -> Path:
        dest = self.engine_path(key)
        with atomic_path(dest, force=True) as tmp:
            os.replace(built, tmp)
        engine_meta.write(dest, {**meta, "key": key}, force=True)
        index = self._index()
        index[key] = {k: meta.get(k) for k in ("model", "onnx_sha256", "flavour", "trt_version", "compute_capabilities",
                                               "hardware_compatibility", "built_on_gpu", "precision", "shapes",
                                               "size_bytes", "build_ms")}
        index[key].update(created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), last_hit=None)
        self._write_index(index)
        return dest

    def entries(self) -> dict:
        return self._index()

    def _index(self) -> dict:
        try:
            data = json.loads((self.root / INDEX).read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except (OSError, json.JSONDecodeError):
            return {}

    def _write_index(self, index: dict) -> None:
        write_json(self.root / INDEX, index, force=True)

    def _touch(self, key: str) -> None:
        index = self._index()
        if key in index:
            index[key]["last_hit"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            self._write_index(index)

    def _drop(self, key: str) -> None:
        path = self.engine_path(key)
        for p in (path, engine_meta.sidecar_path(path)):
            p.unlink(missing_ok=True)
        index = self._index()
        if index.pop(key, None) is not None:
            self._write_index(index)
