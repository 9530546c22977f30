"""Where xopt keeps caches (engines, TensorRT-RTX runtime caches): `$XOPT_CACHE_DIR`, else
`$XDG_CACHE_HOME/xopt`, else `~/.cache/xopt`. Shared by the engine pass and the trt backend."""
from __future__ import annotations

import os
from pathlib import Path


def cache_root(cache_dir: str | Path | None = None) -> Path:
    if cache_dir:
        return Path(cache_dir)
    if os.environ.get("XOPT_CACHE_DIR"):
        return Path(os.environ["XOPT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "xopt"
