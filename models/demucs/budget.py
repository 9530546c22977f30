"""Fit-to-budget for Demucs: the longest segment, then the largest batch, within budget.

A "chunked" Demucs is a segment length and a batch size (overlap-add does the rest), so
the search is over those two. Peak memory is measured on this host at small sizes, one
fresh process per point (allocator caches would hide growth otherwise), and fitted as
a + B·(b·L + c·L²) (B batch, L segment samples; the transformer's attention is quadratic
in L) with no negative term. Weights are added by size; on a GPU profile the CUDA context
is added and FP16 halves weights and activations. Everything is labelled an estimate; on a GPU
host `xopt profile` measures the real VRAM peak.
"""
from __future__ import annotations

import time
from typing import Any, Mapping

import numpy as np

from xopt.errors import BudgetError, UserError
from xopt.fitting import CUDA_CONTEXT_MB, measure_in_fresh_process, nnls, parse_chunk

POINTS = ((1, 1 / 3), (1, 2 / 3), (1, 1.0), (2, 2 / 3))  # (batch, fraction of the largest measured segment)
SEGMENTS = (7.8, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0)
MAX_BATCH = 16  # a 2-minute track is ~20 segments; more buys nothing


def measure_point(config: Mapping[str, Any], batch: int, seconds: float, seed: int = 0) -> dict:
    """Host peak (MB) of one no-grad forward of the core above the loaded model (this process)."""
    import torch

    from xopt.models.demucs import build
    from xopt.runtime.memory import host_peak_mb, host_rss_mb, reset_host_peak
    from xopt.models.demucs import pipeline as host

    built = build(config={**dict(config), "segment": seconds}, seed=seed)
    c = built.config
    feed = host.segment_feed(c["segment_samples"], batch, seed, c["nfft"], c["spectral"], c["audio_channels"])
    args = [torch.from_numpy(feed["mix"]), torch.from_numpy(feed["spec"])]
    base = host_rss_mb()
    if not reset_host_peak():
        raise UserError("cannot reset the host peak-memory counter here", "run xopt fit on Linux")
    with torch.inference_mode():
        built.module(*args)
    return {"batch": batch, "seconds": seconds, "samples": c["segment_samples"],
            "activation_mb": host_peak_mb() - base, "parameters": c["parameters"]}


def point(req: dict) -> dict:
    """What `xopt.fitting.measure_in_fresh_process` calls: one torch point, or one ORT run."""
    if "ort" in req:
        return measure_ort(req["ort"])
    return measure_point(req["config"], req["batch"], req["seconds"], req["seed"])


def _measure_in_subprocess(config, batch, seconds, seed) -> dict:
    return measure_in_fresh_process("xopt.models.demucs.budget:point",
                                    {"config": dict(config), "batch": batch, "seconds": seconds, "seed": seed},
                                    what=f"measuring batch {batch} x {seconds} s",
                                    fix="check that the demucs extra is installed and memory is free")


def fit_curve(points: list[dict]) -> dict:
    """Non-negative least squares of activation_mb = a + B·(b·L + c·L²) (B batch, L samples)."""
    L = np.array([p["samples"] for p in points], dtype=np.float64)
    B = np.array([p["batch"] for p in points], dtype=np.float64)
    coef, rss = nnls([np.ones_like(L), B * L, B * L * L], [p["activation_mb"] for p in points])
    return {"a_mb": float(coef[0]), "b_mb_per_sample": float(coef[1]), "c_mb_per_sample2": float(coef[2]),
            "rms_residual_mb": float(np.sqrt(rss / len(L))) if len(L) else 0.0}


def predict_mb(curve: Mapping[str, float], samples: int, batch: int, weights_mb: float, precision: str,
               gpu: bool) -> float:
    per_item = curve["b_mb_per_sample"] * samples + curve["c_mb_per_sample2"] * samples ** 2
    scale = 0.5 if precision in ("fp16", "bf16") else 1.0
    act = (curve["a_mb"] + per_item * batch) * scale
    return weights_mb * scale + act + (CUDA_CONTEXT_MB if gpu else 0.0)


def search(curve, weights_mb: float, budget_mb: float, samplerate: int, segments, precision: str, gpu: bool,
           max_batch: int = MAX_BATCH) -> dict | None:
    """The longest segment that fits, then the largest batch at it. Longer segments first:
    HTDemucs was trained at 7.8 s (demucs pads shorter ones back to it) and every segment
    boundary costs overlap-add work."""
    for seconds in sorted(segments, reverse=True):
        samples = int(seconds * samplerate)
        batch = 0
        while batch < max_batch and predict_mb(curve, samples, batch + 1, weights_mb, precision, gpu) <= budget_mb:
            batch += 1
        if batch:
            return {"segment_seconds": seconds, "batch": batch, "samples": samples,
                    "estimated_peak_mb": round(predict_mb(curve, samples, batch, weights_mb, precision, gpu), 1)}
    return None


def measure_ort(artifact: str, batch: int = 1) -> dict:
    """Host peak (MB) of one ONNX Runtime run of an exported core above the loaded session
    (CPU arena off, so the figure is the working set, not the arena's rounded high-water mark)."""
    import onnxruntime as ort

    from xopt.runtime.memory import host_peak_mb, host_rss_mb, reset_host_peak
    from xopt.models.demucs import pipeline as host

    so = ort.SessionOptions()
    so.enable_cpu_mem_arena = False
    so.log_severity_level = 3
    sess = ort.InferenceSession(artifact, sess_options=so, providers=["CPUExecutionProvider"])
    shapes = {i.name: i.shape for i in sess.get_inputs()}
    length, freqs = shapes["mix"][-1], shapes["spec"][-2]
    feed = host.segment_feed(length, batch, 0, 2 * freqs if freqs > 1 else 4096, freqs > 1)
    base = host_rss_mb()
    reset_host_peak()
    sess.run(None, feed)
    return {"batch": batch, "samples": length, "activation_mb": host_peak_mb() - base}


def _ort_calibration(cfg, options, curve, measure_sub) -> dict | None:
    """Scale the torch-measured curve to ONNX Runtime with one run of the exported graph, when
    the caller names an export of this config (options["artifacts"])."""
    from pathlib import Path

    from xopt.manifest import MANIFEST_NAME, load

    if not options.get("artifacts"):
        return None
    art = Path(options["artifacts"])
    if not (art / MANIFEST_NAME).exists():
        return None
    manifest = load(art)
    if manifest.config != cfg or not manifest.has("fp32"):
        return None
    ort_point = measure_sub(str(manifest.path_of("fp32")))
    torch_mb = curve["a_mb"] + curve["b_mb_per_sample"] * ort_point["samples"] + \
        curve["c_mb_per_sample2"] * ort_point["samples"] ** 2
    return {**ort_point, "artifact": str(manifest.path_of("fp32")),
            "ratio": max(1.0, ort_point["activation_mb"] / max(torch_mb, 1.0))}


def _measure_ort_in_subprocess(artifact: str) -> dict:
    return measure_in_fresh_process("xopt.models.demucs.budget:point", {"ort": artifact},
                                    what=f"measuring {artifact} on ONNX Runtime",
                                    fix="check that onnxruntime is installed")


def fit_to_budget(spec, profile, config: Mapping[str, Any] | None, options: Mapping[str, Any]) -> dict:
    from xopt import progress
    from xopt.models.demucs import _resolve
    from xopt.machine import describe
    from xopt.report_schema import SCHEMA_VERSION

    cfg = _resolve(config)
    max_seg = float(cfg.get("segment") or cfg["kwargs"].get("segment", 7.8))
    top = min(1.5, max_seg)  # small sizes: cheap to run, and the fit extrapolates in L
    points_wanted = options.get("points") or [(b, round(f * top, 3)) for b, f in POINTS]
    measure = options.get("measure", _measure_in_subprocess)
    with progress.step(f"demucs: host peak memory at {len(points_wanted)} small segment x batch points") as facts:
        points = [measure(cfg, int(b), float(s), 0) for b, s in points_wanted]
        facts["note"] = ", ".join(f"{p['batch']}x{p['seconds']}s={p['activation_mb']:.0f}MB" for p in points)
    curve = fit_curve(points)
    calibration = _ort_calibration(cfg, options, curve, options.get("measure_ort", _measure_ort_in_subprocess))
    if calibration:
        curve = {**curve, **{k: curve[k] * calibration["ratio"] for k in ("a_mb", "b_mb_per_sample",
                                                                         "c_mb_per_sample2")}}
    params = points[0]["parameters"]
    weights_mb = params * 4 / 2 ** 20
    gpu = profile.kind == "gpu"
    segments = [s for s in options.get("segments", SEGMENTS) if s <= max_seg + 1e-9] or [max_seg]
    targets = profile.model_targets("demucs")
    max_batch = int(options.get("max_batch", MAX_BATCH))
    results, rows = [], []
    basis = "estimate: host-CPU torch peak at small sizes, fitted a+B(bL+cL^2)" + (
        f", scaled x{calibration['ratio']:.2f} to ONNX Runtime (one run of the export)" if calibration else
        ", not calibrated to ONNX Runtime (no export of this config found)") + (
        f", + {CUDA_CONTEXT_MB:.0f} MB CUDA context, FP16 halves" if gpu else "")
    for precision in [p for p in ("fp32", "fp16") if p in profile.precisions]:
        best = search(curve, weights_mb, profile.budget_mb, 44100, segments, precision, gpu, max_batch)
        if best is None:
            results.append({"variant": precision, "precision": precision, "error": "no segment fits",
                            "basis": basis})
            rows.append([precision, "-", "-", "-", "FAILED: nothing fits"])
            continue
        results.append({"variant": precision, "precision": precision, **best, "budget_mb": profile.budget_mb,
                        "target_batch_fits": best["batch"] >= int(targets.get("max_batch", 1)), "basis": basis})
        rows.append([precision, best["segment_seconds"], best["batch"],
                     round(best["segment_seconds"] * best["batch"], 2), best["estimated_peak_mb"]])
    fitted = [r for r in results if "error" not in r]
    if not fitted:
        raise BudgetError(f"demucs ({cfg['preset']}) at {min(segments)} s", "use a larger device profile")
    choice = fitted[-1] if gpu else fitted[0]  # FP16 on GPUs, FP32 on CPUs (no FP16 speed-up there)
    return {
        "schema_version": SCHEMA_VERSION, "kind": "fit", "model": spec.name,
        "weights": {"kind": "seeded-random", "seed": 0, "note": "memory does not depend on weight values"},
        "config": dict(cfg), "covers": spec.covers, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": options.get("command", "xopt fit demucs"), "machine": describe(), "profile": profile.to_json(),
        "settings": {"basis": basis, "segments": segments, "max_batch": max_batch,
                     "points": [[p["batch"], p["seconds"]] for p in points]},
        "results": results,
        "extra": {"curve": {**curve, "points": points, "weights_mb": round(weights_mb, 1),
                            "ort_calibration": calibration},
                  "choice": {"precision": choice["precision"], "segment": choice["segment_seconds"],
                             "batch": choice["batch"]},
                  "fit": {"head": ["precision", "segment s", "batch", "audio s per call", "estimated peak MB"],
                          "rows": rows}},
    }


def chunk_options(value, profile, config_name=None, options: Mapping[str, Any] | None = None) -> dict:
    """The fit hook for `xopt export demucs --chunk VALUE`: `auto` runs the fit; a number is a
    segment in seconds."""
    from xopt.models.demucs import SPEC

    value = parse_chunk(value, ("auto",), float, "4.0")
    if value == "auto":
        choice = fit_to_budget(SPEC, profile, SPEC.config(config_name), dict(options or {}))["extra"]["choice"]
        return {"segment": choice["segment"], "batch": choice["batch"]}
    return {"segment": value}
