"""The Ray Data side of batch inference (runtime/batch.py).

Ray Data reads the input files (read tasks take no CPU: reading is I/O) and streams them to
`map_batches` over an actor pool; each actor holds one loaded pipeline (one session) for its
whole life and returns each file's outputs as a tar archive, or the file's error. The driver
commits the outputs into OUT as results stream back, so memory stays bounded by Ray Data's
backpressure, not by the corpus. Inputs must be readable at the same path on every node (a
shared mount, or the one machine of an embedded Ray); outputs need no shared storage.
"""
from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
import time
from pathlib import Path


class PipelineActor:
    """One loaded pipeline; `__call__` runs a batch of files (rows: path, bytes)."""

    def __init__(self, artifacts: str, holder: list, variant: str, backend: str, options: dict, registered: dict):
        from xopt.registry import MODELS
        from xopt.runtime import load_pipeline
        from xopt.runtime.backends.base import BACKENDS

        BACKENDS.replay(registered.get("backends") or {})
        MODELS.replay(registered.get("models") or {})
        art = Path(artifacts)
        if holder and holder[0] is not None and not (art / "manifest.json").is_file():
            import ray

            from xopt.cache import cache_root
            from xopt.runtime.ship import unpack

            art = unpack(ray.get(holder[0]), cache_root() / "batch-shipped")
        self.pipe = load_pipeline(art, backend=backend, variant=variant, **options)
        self.pid = os.getpid()

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        from xopt.runtime.batch import _one_line

        out: dict[str, list] = {"path": [], "error": [], "payload": [], "seconds": [], "worker": [], "notes": []}
        for path, data in zip(batch["path"], batch["bytes"]):
            t0 = time.perf_counter()
            error, payload = "", b""
            self.pipe.notes.clear()
            with tempfile.TemporaryDirectory(prefix="xopt-batch-") as tmp:
                src = Path(tmp) / "in" / Path(str(path)).name  # the pipeline names outputs after it
                src.parent.mkdir()
                src.write_bytes(bytes(data))
                stage = Path(tmp) / "out"
                stage.mkdir()
                try:
                    written = self.pipe.process_file(src, self.pipe.batch_target(src, stage), force=True)
                    buf = io.BytesIO()
                    with tarfile.open(fileobj=buf, mode="w") as tar:
                        for p in written:
                            tar.add(p, arcname=str(Path(p).relative_to(stage)), recursive=False)
                    payload = buf.getvalue()
                except Exception as exc:  # noqa: BLE001 - the file's error, reported by the driver
                    error = _one_line(exc).replace(str(src), str(path))
                # the pipeline's notes name the copy it read: name the user's file
                notes = json.dumps([{**n, "text": n["text"].replace(str(src), str(path))} for n in self.pipe.notes])
            for key, value in (("path", str(path)), ("error", error), ("payload", payload),
                               ("seconds", time.perf_counter() - t0), ("worker", self.pid), ("notes", notes)):
                out[key].append(value)
        return {k: np.array(v, dtype=object if k in ("path", "error", "payload", "notes") else None)
                for k, v in out.items()}


def _registered() -> dict:
    from xopt.registry import MODELS
    from xopt.runtime.backends.base import BACKENDS

    return {"models": dict(MODELS.origins), "backends": dict(BACKENDS.origins)}


def run(art: Path, todo: list[Path], variant: str, backend: str, address: str | None, workers: int | None,
        options: dict, commit, finish) -> str:
    """Stream `todo` through an actor pool; `finish(src, outcome)` for each file as it returns."""
    from xopt.runtime import ray_env
    from xopt.runtime.batch import _one_line

    gpu = backend not in ("ort-cpu", "torch")
    threads = int(options.get("intra_op_num_threads") or 1)
    with ray_env.connect(address, why="to run files through Ray Data") as ctx:
        ray = ctx.ray
        holder = [None]
        if not ctx.embedded:  # other machines get the export through the object store
            from xopt.runtime.ship import pack

            holder = [ray.put(pack(art))]
        slots = ctx.gpus() if gpu else int(sum(n["resources"].get("CPU", 0) for n in ctx.nodes)) // threads
        if slots < 1:
            from xopt.errors import UserError

            raise UserError(f"{ctx.describe()} has no {'GPU' if gpu else 'CPU'} for a {backend} actor",
                            "join a cluster that has one (--address) or pick another --backend")
        readable = []
        for p in todo:  # Ray Data fails the whole dataset on one unreadable file: those fail here alone
            if os.access(p, os.R_OK):
                readable.append(p)
            else:
                finish(p, {"status": "failed", "outputs": [], "error": f"cannot read {p} (permission denied)",
                           "seconds": 0.0, "worker": os.getpid()})
        if not readable:
            return ctx.describe()
        size = min(workers or slots, len(readable))
        by_path = {str(p): p for p in readable}
        ds = ray.data.read_binary_files(list(by_path), include_paths=True, num_cpus=0,
                                        override_num_blocks=len(readable))
        ds = ds.map_batches(
            PipelineActor, batch_size=1, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=size) if ctx.embedded or workers else
            ray.data.ActorPoolStrategy(min_size=1, max_size=size),
            fn_constructor_kwargs={"artifacts": str(art.resolve()), "holder": holder, "variant": variant,
                                   "backend": backend, "options": options, "registered": _registered()},
            num_cpus=0 if gpu else threads, num_gpus=1 if gpu else 0)
        for row in ds.iter_rows():
            src = by_path.get(row["path"]) or Path(row["path"])
            outcome = {"status": "failed", "outputs": [], "error": row["error"] or None,
                       "seconds": round(float(row["seconds"]), 3), "worker": int(row["worker"])}
            if not row["error"]:
                try:
                    outcome.update(status="ok", outputs=commit.payload(src, row["payload"]),
                                   notes=json.loads(row.get("notes") or "[]"))
                except Exception as exc:  # noqa: BLE001 - e.g. an output that exists and is not ours
                    outcome["error"] = _one_line(exc)
            finish(src, outcome)
        return ctx.describe() + f", {size} actor(s) with one session each"
