"""The child side of analysis/isolate.py: `python -m xopt.analysis.worker JOB.json RESULT.json`.

Jobs: "reference" (the FP32 baseline's outputs and noise floor on the profiling inputs, saved for
the variants), "variant" (one variant profiled against those outputs) and "fits" (does one run
at smaller inputs fit?). The result file holds {"result": ...}, or the failure: {"user_error"},
{"oom"} or {"traceback"}.
"""
from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path


def _progress(what: str, done: int, total: int) -> None:
    print(json.dumps({"progress": {"what": what, "done": done, "total": total}}), flush=True)


def _context(job: dict):
    from xopt.manifest import load as load_manifest
    from xopt.profiles import get_profile
    from xopt.registry import get_model

    return get_model(job["model"]), load_manifest(Path(job["artifacts"])), get_profile(job.get("profile"))


def _reference(job: dict) -> dict:
    from xopt.analysis.isolate import load_feeds, save_feeds
    from xopt.analysis.profiler import REFERENCE_BACKEND, outputs
    from xopt.noise import floor_feeds, noise_floor
    from xopt.runtime import load
    from xopt.runtime.memory import MemoryMonitor

    spec, manifest, _ = _context(job)
    work = Path(job["workdir"])
    if job.get("inputs_file"):
        feeds = load_feeds(Path(job["inputs_file"]))
    else:
        feeds = spec.profile_inputs(job["targets"], job["n"], job["seed"])
    with MemoryMonitor() as mon:
        with load(manifest, backend=REFERENCE_BACKEND, variant="fp32", **job.get("session_options", {})) as base:
            refs = outputs(base, feeds, lambda i: _progress("reference outputs", i, len(feeds)))
            if job.get("inputs_file"):  # the user's inputs: their own floor
                floor = noise_floor(spec, base.run, feeds, job["seed"], refs)
            else:  # the model's floor at these targets, as the export's gate and xopt bench measure it
                floor = noise_floor(spec, base.run, floor_feeds(spec, job["targets"], job["seed"]), job["seed"])
    save_feeds(work / "feeds.npz", feeds)
    save_feeds(work / "refs.npz", refs)
    return {"floor": floor, "inputs": {k: list(v.shape) for k, v in feeds[0].items()}, "n": len(feeds),
            "memory": mon.result}


def _variant(job: dict) -> dict:
    from xopt.analysis.isolate import load_feeds
    from xopt.analysis.profiler import profile_variant

    spec, manifest, profile = _context(job)
    work = Path(job["workdir"])
    feeds, refs = load_feeds(work / "feeds.npz"), load_feeds(work / "refs.npz")
    import os

    result = profile_variant(spec, manifest, job["variant"], job["backend"], feeds, refs, job["floor"], profile,
                             job["frames"], job["seed"], e2e=job["e2e"], warmup=job["warmup"],
                             targets=job["targets"], session_options=_session_options(job, profile),
                             progress=_progress, previews_dir=job.get("previews_dir"),
                             previews=job.get("previews", 0),
                             before_drift=None if job.get("inputs_file") else lambda f: _own_feeds(spec, job, f))
    return {**result, "process": {"pid": os.getpid(), "isolated": True}}


def _session_options(job: dict, profile) -> dict:
    """The job's session options, plus the GPU profile's VRAM budget as the cap of a GPU backend
    (ORT's CUDA arena limit, the trt backend's allocator cap) unless the job sets one."""
    from xopt.runtime.memory import measures_vram

    options = dict(job.get("session_options") or {})
    if profile.kind == "gpu" and measures_vram(job["backend"], options):
        options.setdefault("cap_mb", profile.budget_mb)
    return options


def _own_feeds(spec, job: dict, saved: list[dict]) -> list[dict]:
    """The spec's profiling inputs made again in this process (seeded, so the same arrays as the
    reference's): a model may keep private context per feed that its drift and previews need
    (OpenFold: the sequence and network behind m and z). The saved arrays when they differ."""
    import numpy as np

    again = spec.profile_inputs(job["targets"], len(saved), job["seed"])
    same = len(again) == len(saved) and all(set(a) == set(f) and all(np.array_equal(a[k], f[k]) for k in f)
                                            for a, f in zip(again, saved))
    return again if same else saved


def _fits(job: dict) -> bool:
    from xopt.runtime import load

    spec, manifest, profile = _context(job)
    with load(manifest, backend=job["backend"], variant=job["variant"], **_session_options(job, profile)) as s:
        for feed in spec.profile_inputs(job["targets"], 1, job["seed"]):
            s.run(feed)
    return True


def _onnx(job: dict) -> dict:
    """A graph with no model spec (xopt profile model.onnx / xopt compare A B)."""
    from xopt.analysis.generic import measure_graph
    from xopt.analysis.isolate import load_feeds, save_feeds

    feeds = load_feeds(Path(job["feeds"]))
    refs = load_feeds(Path(job["refs"])) if job.get("refs") else None
    out = measure_graph(job["path"], feeds, job["frames"], job["warmup"], job.get("threads"), _progress, refs)
    save_feeds(Path(job["outs"]), out["outs"])
    return out["result"]


def main(argv) -> int:
    from xopt import progress
    from xopt.analysis.isolate import dumps
    from xopt.analysis.quiet import quiet_third_party
    from xopt.errors import UserError
    from xopt.runtime.memory import is_out_of_memory

    job = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    out = Path(argv[2])
    progress.set_quiet(True)
    try:
        from xopt.analysis.isolate import replay

        replay(job.get("registered") or {})
        with quiet_third_party():
            result = {"reference": _reference, "variant": _variant, "fits": _fits, "onnx": _onnx}[job["kind"]](job)
        data = {"result": result}
    except UserError as exc:
        data = {"user_error": str(exc)}
    except BaseException as exc:  # reported to the parent: OOM is a result, anything else a bug
        if isinstance(exc, MemoryError) or is_out_of_memory(exc):
            data = {"oom": True, "error": type(exc).__name__, "detail": str(exc)[:500]}
        else:
            data = {"traceback": traceback.format_exc()}
            traceback.print_exc()
    out.write_text(dumps(data), encoding="utf-8")
    return 0 if "result" in data else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
