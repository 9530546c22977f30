"""Profile variants against the FP32 baseline: drift (model terms, tensor stats, noise floor),
warm-up, latency, memory, and budget checks against a device profile.

`profile_model` runs the FP32 reference and then each variant in a process of its own
(analysis/isolate.py): warm-up is a cold start, memory is the variant's own, and a variant that
runs out of memory is reported as not fitting while the others still run.
"""
from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Sequence

from xopt import progress
from xopt.errors import UserError
from xopt.device_match import device_targets_not_here
from xopt.noise import drift_between
from xopt.runtime import load
from xopt.runtime.memory import MemoryMonitor
from xopt.stats import latency_summary

from xopt.analysis.previews import PREVIEW_INPUTS
from xopt.analysis.verdicts import NOT_MEASURED, drift_verdict

REFERENCE_BACKEND = "ort-cpu"


def run_targets(profile, manifest) -> dict:
    """The device profile's targets for this model plus what the export was built with: a graph
    of static shapes needs inputs of its own size, and model pipelines rebuild parts from weights."""
    return {**profile.model_targets(manifest.model), "config": manifest.config, "weights": manifest.weights}


def outputs(session, feeds, on_each=None) -> list[dict]:
    outs = []
    for i, f in enumerate(feeds):
        outs.append(session.run(f))
        if on_each:
            on_each(i + 1)
    return outs


def _pipeline_class(spec):
    if not spec.pipeline:
        return None
    module, _, cls = spec.pipeline.partition(":")
    return getattr(importlib.import_module(module), cls)


def _budget(spec, profile, result: dict, on_gpu: bool) -> dict:
    """Checks against the device profile. A device target this machine cannot measure (a GPU
    profile's throughput on a CPU host) reads "not measured here" (passed None), never FAIL."""
    targets = profile.model_targets(spec.name)
    not_here = device_targets_not_here(profile, on_gpu)  # None: this device is the profile's
    checks = [{"name": "precision supported", "passed": result["precision"] in profile.precisions + ("mixed",),
               "value": result["precision"], "limit": list(profile.precisions), "unit": ""}]
    mem = result["memory"]
    basis = f"VRAM ({mem.get('method', 'NVML')})" if on_gpu else "host RSS, a proxy for VRAM"
    checks.append({"name": f"memory within budget [{basis}]", "passed": mem["peak_mb"] <= profile.budget_mb,
                   "value": round(mem["peak_mb"], 1), "limit": round(profile.budget_mb, 1), "unit": "MB"})
    if targets.get("fps") and result.get("fps"):
        fps = result.get("fps_e2e") or result["fps"]
        checks.append({"name": f"throughput [{'this GPU' if on_gpu else 'this CPU'}]", "timing": True,
                       "passed": fps >= targets["fps"], "value": round(fps, 2), "limit": targets["fps"],
                       "unit": "fps"})
    gate = result["drift_gate"]
    checks.append({"name": f"drift within the gate ({gate['key']})", "passed": gate["passed"],
                   "value": gate["text"], "limit": gate.get("bound"), "unit": gate.get("unit", ""),
                   **({"status": "gate not applied (seeded-random weights)"} if gate["passed"] is None else {})})
    if spec.budget_checks is not None:
        checks.extend(spec.budget_checks(targets, result))
    for c in checks:
        if c.get("timing") and not_here:
            c["passed"] = None
            c["status"] = f"{NOT_MEASURED} ({not_here})"
    return {"passed": all(c["passed"] is not False for c in checks), "checks": checks}


def _timed_runs(session, feeds, frames: int, warmup: int, progress=None) -> list[float]:
    for i in range(warmup):  # untimed, after the first inference the session timings keep apart
        session.run(feeds[i % len(feeds)])
    before = len(session.timings.run_ms)
    for i in range(frames):
        session.run(feeds[i % len(feeds)])
        if progress:
            progress("frames", i + 1, frames)
    return session.timings.run_ms[before:]


def _label_free_checks(spec, raw, output, manifest, out: list | None) -> None:
    """The model's label-free checks (EvalHooks.checks) on one end-to-end output: a broken
    pipeline shows up in the profile too, not only in xopt eval and xopt run."""
    hooks = getattr(spec, "evaluation", None)
    if out is None or hooks is None or getattr(hooks, "checks", None) is None:
        return
    out.extend(hooks.checks(raw, output, {"weights": manifest.weights, "origin": "profile"}))


def _e2e(spec, session, manifest, variant, targets, frames: int, seed: int, progress=None,
         checks_out: list | None = None) -> list[float] | None:
    cls = _pipeline_class(spec)
    if cls is None:
        return None
    from xopt.runtime import pipeline_config

    pipe = cls(session, pipeline_config(manifest), variant=manifest.variant(variant))
    frames = min(frames, cls.e2e_runs or frames)
    raws = pipe.raw_samples(max(1, min(frames, 4)), targets, seed)
    first = pipe(raws[0])  # warm the pre/post-processing caches; measured separately as first inference
    _label_free_checks(spec, raws[0], first, manifest, checks_out)
    times = []
    for i in range(frames):
        t0 = time.perf_counter()
        pipe(raws[i % len(raws)])
        times.append((time.perf_counter() - t0) * 1e3)
        if progress:
            progress("end-to-end frames", i + 1, frames)
    return times


def _shape_text(targets) -> str:
    return ", ".join(f"{k}={v}" for k, v in targets.items() if isinstance(v, (int, float)) and not isinstance(v, bool))


def _does_not_fit(spec, manifest, variant, backend, profile, targets, why: str, fits) -> dict:
    """A variant that ran out of memory: say so, and find the largest smaller input that runs
    (`fits(targets) -> bool`, each probe in a process of its own)."""
    smaller, fits_at = dict(targets), None
    while spec.shrink is not None and fits_at is None:
        smaller = spec.shrink(smaller)
        if smaller is None:
            break
        if fits(smaller):
            fits_at = smaller
    hint = (f"fits at {_shape_text(fits_at)}" if fits_at else "no smaller input fits either")
    error = f"does not fit at {_shape_text(targets)} ({why}); {hint}"
    return {"variant": variant, "precision": manifest.variant(variant)["precision"], "backend": backend,
            "artifact": manifest.variant(variant)["path"], "error": error, "fits_at": fits_at,
            "drift": {}, "drift_ok": False, "latency_ms": {}, "memory": {"kind": "out-of-memory", "peak_mb": None},
            "budget": {"passed": False, "checks": [{"name": "fits in memory", "passed": False, "value": error,
                                                    "limit": profile.budget_mb, "unit": "MB"}]}}


def _not_built(manifest, variant: str, backend: str, record: dict) -> dict:
    """A variant its export could not build (it failed its gate or parity): a row that says why,
    with the numbers the export reached, beside the variants that were profiled."""
    best = (record.get("facts") or {}).get("best") or {}
    return {"variant": variant, "precision": record.get("precision", ""), "backend": backend, "artifact": None,
            "error": f"not built: {record['error']}", "export_failure": record,
            "drift": {}, "drift_ok": False, "latency_ms": {}, "memory": {"kind": "not run", "peak_mb": None},
            "budget": {"passed": False, "checks": [{"name": f"passed its {record.get('stage', 'gate')} check at export",
                                                    "passed": False, "value": best.get("value"),
                                                    "limit": ((record.get("facts") or {}).get("gate") or {}).get("bound"),
                                                    "unit": ""}]}}


def profile_variant(spec, manifest, variant: str, backend: str, feeds, refs, floor, profile, frames: int,
                    seed: int, e2e: bool = True, warmup: int = 1, targets: dict | None = None,
                    session_options: dict | None = None, progress=None, previews_dir: str | Path | None = None,
                    previews: int = 0, before_drift=None) -> dict:
    entry = manifest.variant(variant)
    result = {"variant": variant, "precision": entry["precision"], "backend": backend,
              "artifact": entry["path"], "error": None}
    targets = targets if targets is not None else run_targets(profile, manifest)
    with MemoryMonitor(timeline=True, backend=backend, backend_options=session_options) as mon:
        session = load(manifest, backend=backend, variant=variant, **(session_options or {}))
        try:
            mon.mark("session loaded")
            outs = outputs(session, feeds)
            mon.mark("timed frames")
            run_ms = _timed_runs(session, feeds, frames, warmup, progress)
            mon.mark("end to end" if e2e else "close")
            checks: list = []
            e2e_ms = _e2e(spec, session, manifest, variant, targets, frames, seed, progress, checks) if e2e else None
            result["label_free_checks"] = checks
            result["providers"] = session.providers
            result["session"] = session.info()  # e.g. the provider options a GPU backend set
            t = session.timings
        finally:
            session.close()
    if before_drift is not None:  # after the measurements: e.g. restore a model's per-feed context
        feeds = before_drift(feeds)
    result["drift"] = drift_between(spec, refs, outs, feeds)
    result["noise_floor"] = floor
    if previews_dir:  # the model's own outputs beside FP32's, outside the memory measurement
        from xopt.analysis.previews import run_hook

        result.update(run_hook(spec, variant, feeds, refs, outs, previews_dir, previews))
    tensor_ok = all(d["finite"] for d in result["drift"]["tensor"].values())
    result["drift_gate"] = drift_verdict(spec, result["drift"], floor, manifest.weights, entry)
    result["drift_ok"] = result["drift_gate"]["passed"] is not False  # None: measured, not applied
    if not tensor_ok:
        # Model drift terms can look harmless on NaN (a thresholded IoU, a NaN-skipping mean):
        # the variant is reported as failed, with what broke, never as a small drift number.
        bad = [name for name, d in result["drift"]["tensor"].items() if not d["finite"]]
        result["error"] = (f"drift check failed: NaN/Inf in {', '.join(bad)} on the drift inputs (FP16 overflow?); "
                           "keep the overflowing layers in FP32 or use another variant")
    result["warmup_ms"] = {"load": t.load_ms, "first_inference": t.first_run_ms, "warmup_runs": warmup,
                           **({"build": t.build_ms} if t.build_ms else {}),
                           **({"cache_hit": t.cache_hit} if t.cache_hit is not None else {})}
    result["latency_ms"] = latency_summary(run_ms)
    if t.device_ms:
        result["device_latency_ms"] = latency_summary(t.device_ms)
    result["latency_e2e_ms"] = latency_summary(e2e_ms) if e2e_ms else None
    batch = next(iter(feeds[0].values())).shape[0] if feeds and next(iter(feeds[0].values())).ndim else 1
    result["fps"] = 1e3 * batch / result["latency_ms"]["p50"] if run_ms else None
    result["fps_e2e"] = 1e3 / result["latency_e2e_ms"]["p50"] if e2e_ms else None
    result["memory"] = mon.result
    result["budget"] = _budget(spec, profile, result, mon.result["kind"] == "vram-nvml")
    return result


def ensure_variants(name: str, variants: Sequence[str], artifacts, profile):
    """The manifest in `artifacts`, after exporting any variant it lacks (with its weights). A
    variant whose export failed is not built again here: the caller shows that result (only
    `xopt export` retries, with the settings the user gives it)."""
    from xopt.export.pipeline import default_out_dir, export_model
    from xopt.manifest import MANIFEST_NAME
    from xopt.manifest import load as load_manifest

    art = Path(artifacts) if artifacts else default_out_dir(name)
    manifest = load_manifest(art) if (art / MANIFEST_NAME).exists() else None
    if manifest is not None and manifest.model != name:  # its artifacts would go through the wrong spec
        raise UserError(f"{art} holds a {manifest.model} export, not {name}", f"pass --artifacts of a {name} export")
    missing = [v for v in variants if manifest is None or not (manifest.has(v) or manifest.failure(v))]
    if not missing:
        return manifest
    progress.info(f"exporting missing variant(s) {', '.join(missing)} into {art}")
    kw = {}
    if manifest is not None:
        w = manifest.weights
        kw = {"checkpoint": w.get("path") if w.get("kind") == "checkpoint" else None, "seed": w.get("seed") or 0,
              "config": manifest.config.get("preset"),
              "config_overrides": {k: v for k, v in manifest.config.items() if k != "preset"}}
    return export_model(name, missing, out_dir=art, profile=profile, **kw)


def validate_request(name: str, variants: Sequence[str], backend: str, frames: int, warmup: int,
                     threads: int | None, profile_name: str | None):
    """Everything about a profile request that can be wrong, checked before any work or output."""
    from xopt.profiles import get_profile
    from xopt.registry import get_model
    from xopt.runtime.backends.base import get_backend

    spec = get_model(name)
    profile = get_profile(profile_name)
    if not variants:
        raise UserError("no variants to profile", "pass e.g. --variants fp32,fp16")
    for v in variants:
        spec.variant(v)
    get_backend(backend)
    if backend == "torch" and any(v != "fp32" for v in variants):
        raise UserError("the torch backend runs the FP32 PyTorch model only", "use --variants fp32 with --backend torch")
    if frames < 1:
        raise UserError(f"--frames {frames} measures nothing", "pass --frames 1 or more")
    if warmup < 0:
        raise UserError(f"--warmup {warmup} is negative", "pass --warmup 0 or more")
    if threads is not None and threads < 1:
        raise UserError(f"--threads {threads} is not a thread count", "pass --threads 1 or more")
    return spec, profile


def profile_model(name: str, variants: Sequence[str], artifacts: str | Path | None = None, backend: str = "ort-cpu",
                  frames: int = 20, profile_name: str | None = None, seed: int = 0, export_missing: bool = True,
                  e2e: bool = True, command: str | None = None, warmup: int = 1, threads: int | None = None,
                  targets_override: dict | None = None, inputs_file: str | Path | None = None,
                  log: str | Path | None = None, previews_dir: str | Path | None = None,
                  previews: int | None = None) -> dict:
    """Profile `variants` of `name`, each in a process of its own; the report dict (kind "profile")."""
    import tempfile

    from xopt.analysis.isolate import ChildOutOfMemory, run_job
    from xopt.machine import describe
    from xopt.report_schema import SCHEMA_VERSION

    spec, profile = validate_request(name, variants, backend, frames, warmup, threads, profile_name)
    manifest = ensure_variants(name, variants, artifacts, profile)
    art = manifest.directory
    targets = {**run_targets(profile, manifest), **(targets_override or {})}
    session_options = {"intra_op_num_threads": threads} if threads else {}
    base = {"model": name, "artifacts": str(art), "profile": profile.source, "seed": seed,
            "session_options": session_options}
    log_path = Path(log) if log else Path(tempfile.gettempdir()) / f"xopt-{name}-profile.log"
    results, ref = [], None
    with tempfile.TemporaryDirectory(prefix="xopt-profile-") as tmp:
        work = Path(tmp)
        base["workdir"] = str(work)
        inputs = None
        if inputs_file:
            from xopt.analysis.isolate import save_feeds
            from xopt.runtime.polygraphy_io import load_inputs

            inputs = work / "user-inputs.npz"
            save_feeds(inputs, load_inputs(inputs_file))

        def fits_for(variant: str):
            def fits(smaller: dict) -> bool:
                try:
                    return run_job("fits", {**base, "variant": variant, "backend": backend, "targets": smaller},
                                   work, log_path)
                except ChildOutOfMemory:
                    return False
            return fits

        n = max(1, min(frames, 8))
        try:
            with progress.bar(f"{name}: FP32 reference outputs and noise floor ({REFERENCE_BACKEND})") as bar:
                ref = run_job("reference", {**base, "targets": targets, "n": n, "inputs_file": inputs and str(inputs)},
                              work, log_path, on_progress=bar)
        except ChildOutOfMemory as exc:  # the reference itself does not fit: so does no variant
            fp32_fits = _does_not_fit(spec, manifest, "fp32", REFERENCE_BACKEND, profile, targets, exc.why,
                                      fits_for("fp32"))
            results = [{**fp32_fits, "variant": v_, "precision": manifest.variant(v_)["precision"],
                        "artifact": manifest.variant(v_)["path"]} if manifest.has(v_)
                       else _not_built(manifest, v_, backend, manifest.failure(v_)) for v_ in variants]
        for v in variants if ref is not None else ():
            record = manifest.failure(v) if not manifest.has(v) else None
            if record is not None:
                results.append(_not_built(manifest, v, backend, record))
                continue
            job = {**base, "variant": v, "backend": backend, "targets": targets, "frames": frames, "warmup": warmup,
                   "e2e": e2e, "floor": ref["floor"], "previews_dir": previews_dir and str(previews_dir),
                   "previews": PREVIEW_INPUTS if previews is None else previews, "inputs_file": inputs and str(inputs)}
            try:
                with progress.bar(f"{name} {v}: {frames} frames on {backend}") as bar:
                    results.append(run_job("variant", job, work, log_path, on_progress=bar))
            except ChildOutOfMemory as exc:
                results.append(_does_not_fit(spec, manifest, v, backend, profile, targets, exc.why, fits_for(v)))
    inputs_text = (spec.describe_inputs(targets, ref["inputs"]) if spec.describe_inputs and ref else None)
    from xopt.analysis.mixed_report import sections

    mixed, per_variant = sections(manifest, variants)
    for r in results:
        if r.get("variant") in per_variant:
            r["layer_drift"] = per_variant[r["variant"]]
    return {
        "schema_version": SCHEMA_VERSION, "kind": "profile", "model": name, "weights": manifest.weights,
        "config": manifest.config, "covers": manifest.covers,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command or f"xopt profile {name} --variants {','.join(variants)}",
        "machine": describe(), "profile": profile.to_json(),
        "settings": {"backend": backend, "frames": frames, "warmup_runs": warmup, "seed": seed, "artifacts": str(art),
                     "reference": f"fp32 artifact on {REFERENCE_BACKEND}", "drift_inputs": (ref or {}).get("n", 0),
                     "inputs": (ref or {}).get("inputs"), "input_size": inputs_text,
                     "inputs_file": str(inputs_file) if inputs_file else None,
                     "threads": {"intra_op": threads or "onnxruntime default (one per physical core)", "inter_op": 1},
                     "isolation": "each variant (and the FP32 reference) in a process of its own",
                     "targets": {k: v for k, v in targets.items() if k not in ("config", "weights")},
                     "log": str(log_path)},
        "results": results, "extra": {"drift_keys": list(spec.drift_keys), "gate": _gate_json(spec),
                                      "higher_is_better": list(spec.higher_is_better),
                                      "drift_units": dict(spec.drift_units), **mixed},
    }


def _gate_json(spec) -> dict:
    from dataclasses import asdict

    from xopt.analysis.verdicts import gate_of

    return asdict(gate_of(spec))
