"""Run one measurement job in a process of its own.

Each profiled variant (the FP32 reference included) runs in a fresh interpreter: its warm-up is a
cold start, its peak memory is its own, and a variant the kernel kills for memory is a result
("does not fit"), not the end of the whole profile. Jobs and results travel as JSON files,
arrays (inputs, reference outputs) as .npz files in a work directory; progress comes back as
JSON lines on the child's stdout, third-party output goes to the log file.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from xopt.errors import InternalError, UserError

KILLED_FOR_MEMORY = (-signal.SIGKILL, 128 + signal.SIGKILL)


class ChildOutOfMemory(Exception):
    """The job ran out of memory (MemoryError, an allocator failure, or the kernel's OOM killer)."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


def save_feeds(path: Path, feeds: list[Mapping[str, np.ndarray]]) -> None:
    """A list of {name: array} as one .npz (keys `i/name`), written atomically."""
    tmp = path.with_name(path.name + ".partial.npz")
    np.savez(tmp, **{f"{i}/{k}": v for i, f in enumerate(feeds) for k, v in f.items()})
    os.replace(tmp, path)


def load_feeds(path: Path) -> list[dict[str, np.ndarray]]:
    out: dict[int, dict[str, np.ndarray]] = {}
    with np.load(path) as data:
        for key in data.files:
            i, _, name = key.partition("/")
            out.setdefault(int(i), {})[name] = data[key]
    return [out[i] for i in sorted(out)]


def run_job(kind: str, payload: Mapping[str, Any], workdir: Path, log: Path,
            on_progress: Callable[[dict], None] | None = None, env: Mapping[str, str] | None = None) -> dict:
    """Run `xopt.analysis.worker` on one job; its result dict. A UserError in the child is raised
    here with the same text, an out-of-memory child raises ChildOutOfMemory, anything else is an
    InternalError carrying the child's traceback."""
    workdir.mkdir(parents=True, exist_ok=True)
    n = len(list(workdir.glob("*.job.json")))
    job = workdir / f"{n:02d}-{kind}.job.json"
    result = job.with_name(job.name.replace(".job.json", ".result.json"))
    job.write_text(json.dumps({"kind": kind, "registered": _registered(), **payload}, default=_jsonable),
                   encoding="utf-8")
    with open(log, "a", encoding="utf-8") as log_fh:
        log_fh.write(f"\n===== {kind} job {job.name} =====\n")
        log_fh.flush()
        # a context manager: it closes the stdout pipe (else a ResourceWarning for every job)
        with subprocess.Popen([sys.executable, "-m", "xopt.analysis.worker", str(job), str(result)],
                              stdout=subprocess.PIPE, stderr=log_fh, text=True,
                              env={**os.environ, **(env or {}), "PYTHONWARNINGS": "default",
                                   # the same import path: models and passes registered from it come back
                                   "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:  # progress lines; anything else a library printed goes to the log
                if line.startswith('{"progress"') and on_progress:
                    on_progress(json.loads(line)["progress"])
                elif line.strip():
                    log_fh.write(line)
                    log_fh.flush()
            rc = proc.wait()
    data = json.loads(result.read_text(encoding="utf-8")) if result.exists() else {}
    if data.get("user_error"):
        raise UserError(data["user_error"])
    if data.get("oom") or (rc in KILLED_FOR_MEMORY and not data):
        raise ChildOutOfMemory(data.get("error") or "killed by the kernel's out-of-memory killer")
    if rc != 0 or "result" not in data:
        raise InternalError(f"{kind} job failed (exit {rc}); see {log}:\n{data.get('traceback', '')}")
    return data["result"]


def _registered() -> dict:
    """Models, passes and backends this process registered from outside xopt's own packages
    (a test model, a plug-in registered by hand): the child registers them again."""
    from xopt.optimize.base import PASSES
    from xopt.registry import MODELS
    from xopt.runtime.backends.base import BACKENDS

    return {"models": MODELS.origins, "passes": PASSES.origins, "backends": BACKENDS.origins}


def replay(registered: Mapping[str, Mapping[str, str]]) -> None:
    from xopt.optimize.base import PASSES
    from xopt.registry import MODELS
    from xopt.runtime.backends.base import BACKENDS

    for key, reg in (("passes", PASSES), ("backends", BACKENDS), ("models", MODELS)):
        reg.replay(dict(registered.get(key) or {}))


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(value) -> str:
    return json.dumps(value, default=_jsonable, allow_nan=True)
