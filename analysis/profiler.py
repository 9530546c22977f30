"""Profile variants against the FP32 baseline: drift (model terms, tensor stats, noise floor),
warm-up, latency, memory, and budget checks against a device profile.
"""
from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from xopt import progress
from xopt.errors import UserError
from xopt.compare import compare, worst
from xopt.runtime import load
from xopt.runtime.memory import MemoryMonitor, is_out_of_memory
from xopt.stats import latency_summary, mean_terms

REFERENCE_BACKEND = "ort-cpu"


def run_targets(profile, manifest) -> dict:
    """The device profile's targets for this model plus what the export was built with: a graph
    of static shapes needs inputs of its own size, and model pipelines rebuild parts from weights."""
    return {**profile.model_targets(manifest.model), "config": manifest.config, "weights": manifest.weights}


def _outputs(session, feeds) -> list[dict]:
    return [session.run(f) for f in feeds]


def drift_between(spec, refs: list[dict], outs: list[dict], feeds: list[dict]) -> dict:
    terms = mean_terms([spec.drift(r, o, f) for r, o, f in zip(refs, outs, feeds)])
    terms["tensor"] = worst([compare(r, o) for r, o in zip(refs, outs)])
    return terms


def noise_floor(spec, baseline, feeds: list[dict], refs: list[dict], seed: int) -> dict:
    """The FP32 model's own drift under ±1 input quantum: what 'no real change' looks like."""
    rng = np.random.default_rng(seed + 1)
    noisy = [spec.perturb(f, rng) for f in feeds]
    return drift_between(spec, refs, _outputs(baseline, noisy), noisy)


def _pipeline_class(spec):
    if not spec.pipeline:
        return None
    module, _, cls = spec.pipeline.partition(":")
    return getattr(importlib.import_module(module), cls)


def _budget(spec, profile, result: dict, on_gpu: bool) -> dict:
    targets = profile.model_targets(spec.name)
    checks = [{"name": "precision supported", "passed": result["precision"] in profile.precisions + ("mixed",),
               "value": result["precision"], "limit": list(profile.precisions), "unit": ""}]
    mem = result["memory"]
    basis = "VRAM (NVML)" if on_gpu else "host RSS, no GPU here: a proxy for VRAM"
    checks.append({"name": f"memory within budget [{basis}]", "passed": mem["peak_mb"] <= profile.budget_mb,
                   "value": round(mem["peak_mb"], 1), "limit": round(profile.budget_mb, 1), "unit": "MB"})
    if targets.get("fps") and result.get("fps"):
        fps = result.get("fps_e2e") or result["fps"]
        checks.append({"name": f"throughput [{'this GPU' if on_gpu else 'this CPU, not the device'}]",
                       "passed": fps >= targets["fps"], "value": round(fps, 2), "limit": targets["fps"],
                       "unit": "fps"})
    checks.append({"name": "drift finite and within tolerance", "passed": bool(result["drift_ok"]),
                   "value": result["drift_ok"], "limit": True, "unit": ""})
    if spec.budget_checks is not None:
        checks.extend(spec.budget_checks(targets, result))
    return {"passed": all(c["passed"] for c in checks), "checks": checks}


def _timed_runs(session, feeds, frames: int) -> list[float]:
    before = len(session.timings.run_ms)
    for i in range(frames):
        session.run(feeds[i % len(feeds)])
    return session.timings.run_ms[before:]


def _e2e(spec, session, manifest, targets, frames: int, seed: int) -> list[float] | None:
    cls = _pipeline_class(spec)
    if cls is None:
        return None
    from xopt.runtime import pipeline_config

    pipe = cls(session, pipeline_config(manifest))
    raws = pipe.raw_samples(max(1, min(frames, 4)), targets, seed)
    pipe(raws[0])  # warm the pre/post-processing caches; measured separately as first inference
    times = []
    for i in range(frames):
        t0 = time.perf_counter()
        pipe(raws[i % len(raws)])
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def _fits(spec, manifest, variant, backend, targets, seed) -> bool:
    try:
        with load(manifest, backend=backend, variant=variant) as session:
            for feed in spec.profile_inputs(targets, 1, seed):
                session.run(feed)
        return True
    except Exception as exc:  # same rule as the caller: only allocation failures mean "does not fit"
        if is_out_of_memory(exc):
            return False
        raise


def _shape_text(targets) -> str:
    return ", ".join(f"{k}={v}" for k, v in targets.items() if isinstance(v, (int, float)) and not isinstance(v, bool))


def _does_not_fit(spec, manifest, variant, backend, profile, seed, exc) -> dict:
    """A variant that ran out of memory: say so, and find the largest smaller input that runs."""
    targets = run_targets(profile, manifest)
    smaller, fits_at = targets, None
    while spec.shrink is not None and fits_at is None:
        smaller = spec.shrink(smaller)
        if smaller is None:
            break
        if _fits(spec, manifest, variant, backend, smaller, seed):
            fits_at = smaller
    hint = (f"fits at {_shape_text(fits_at)}" if fits_at else "no smaller input fits either")
    error = f"does not fit the budget at {_shape_text(targets)} ({type(exc).__name__}); {hint}"
    return {"variant": variant, "precision": manifest.variant(variant)["precision"], "backend": backend,
            "artifact": manifest.variant(variant)["path"], "error": error, "fits_at": fits_at,
            "drift": {}, "drift_ok": False, "latency_ms": {}, "memory": {"kind": "out-of-memory", "peak_mb": None},
            "budget": {"passed": False, "checks": [{"name": "fits in memory", "passed": False, "value": error,
                                                    "limit": profile.budget_mb, "unit": "MB"}]}}


def profile_variant(spec, manifest, variant: str, backend: str, feeds, refs, floor, profile, frames: int,
                    seed: int, e2e: bool = True) -> dict:
    entry = manifest.variant(variant)
    result = {"variant": variant, "precision": entry["precision"], "backend": backend,
              "artifact": entry["path"], "error": None}
    targets = run_targets(profile, manifest)
    with MemoryMonitor() as mon:
        session = load(manifest, backend=backend, variant=variant)
        try:
            outs = _outputs(session, feeds)
            run_ms = _timed_runs(session, feeds, frames)
            e2e_ms = _e2e(spec, session, manifest, targets, frames, seed) if e2e else None
            result["providers"] = session.providers
            t = session.timings
        finally:
            session.close()
    result["drift"] = drift_between(spec, refs, outs, feeds)
    result["noise_floor"] = floor
    tensor_ok = all(d["finite"] for d in result["drift"]["tensor"].values())
    result["drift_ok"] = tensor_ok and bool(result["drift"].get("passed", True))
    if not tensor_ok:
        # Model drift terms can look harmless on NaN (a thresholded IoU, a NaN-skipping mean):
        # the variant is reported as failed, with what broke, never as a small drift number.
        bad = [name for name, d in result["drift"]["tensor"].items() if not d["finite"]]
        result["error"] = (f"drift check failed: NaN/Inf in {', '.join(bad)} on the drift inputs (FP16 overflow?); "
                           "keep the overflowing layers in FP32 or use another variant")
    result["warmup_ms"] = {"load": t.load_ms, "first_inference": t.first_run_ms,
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
    """The manifest in `artifacts`, after exporting any variant it lacks (with its weights)."""
    from xopt.export.pipeline import default_out_dir, export_model
    from xopt.manifest import MANIFEST_NAME
    from xopt.manifest import load as load_manifest

    art = Path(artifacts) if artifacts else default_out_dir(name)
    manifest = load_manifest(art) if (art / MANIFEST_NAME).exists() else None
    if manifest is not None and manifest.model != name:  # its artifacts would go through the wrong spec
        raise UserError(f"{art} holds a {manifest.model} export, not {name}", f"pass --artifacts of a {name} export")
    missing = [v for v in variants if manifest is None or not manifest.has(v)]
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


def profile_model(name: str, variants: Sequence[str], artifacts: str | Path | None = None, backend: str = "ort-cpu",
                  frames: int = 20, profile_name: str | None = None, seed: int = 0, export_missing: bool = True,
                  e2e: bool = True, command: str | None = None) -> dict:
    from xopt.machine import describe
    from xopt.profiles import get_profile
    from xopt.registry import get_model
    from xopt.report_schema import SCHEMA_VERSION

    from xopt.runtime.backends.base import get_backend

    spec = get_model(name)
    profile = get_profile(profile_name)
    for v in variants:
        spec.variant(v)
    get_backend(backend)
    manifest = ensure_variants(name, variants, artifacts, profile)
    art = manifest.directory
    if backend == "torch" and any(v != "fp32" for v in variants):
        raise UserError("the torch backend runs the FP32 PyTorch model only", "use --variants fp32 with --backend torch")

    results = []
    try:
        with progress.step(f"{name}: FP32 baseline and noise floor ({REFERENCE_BACKEND})"):
            targets = run_targets(profile, manifest)
            feeds = spec.profile_inputs(targets, max(1, min(frames, 8)), seed)
            with load(manifest, backend=REFERENCE_BACKEND, variant="fp32") as baseline:
                refs = _outputs(baseline, feeds)
                floor = noise_floor(spec, baseline, feeds, refs, seed)
    except Exception as exc:  # the baseline itself does not fit: every variant is reported as such
        if not is_out_of_memory(exc):
            raise
        feeds = None
        results = [_does_not_fit(spec, manifest, v, backend, profile, seed, exc) for v in variants]
    for v in variants if feeds is not None else ():
        with progress.step(f"{name} {v}: {frames} frames on {backend}"):
            try:
                results.append(profile_variant(spec, manifest, v, backend, feeds, refs, floor, profile, frames,
                                               seed, e2e))
            except Exception as exc:  # only allocation failures are a result; anything else is re-raised
                if not is_out_of_memory(exc):
                    raise
                results.append(_does_not_fit(spec, manifest, v, backend, profile, seed, exc))
    return {
        "schema_version": SCHEMA_VERSION, "kind": "profile", "model": name, "weights": manifest.weights,
        "config": manifest.config, "covers": manifest.covers,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command or f"xopt profile {name} --variants {','.join(variants)}",
        "machine": describe(), "profile": profile.to_json(),
        "settings": {"backend": backend, "frames": frames, "seed": seed, "artifacts": str(art),
                     "reference": f"fp32 artifact on {REFERENCE_BACKEND}", "drift_inputs": len(feeds or ())},
        "results": results, "extra": {"drift_keys": list(spec.drift_keys)},
    }
