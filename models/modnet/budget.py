"""Fit-to-budget for MODNet: the largest inference resolution each variant keeps within budget.

MODNet runs at the size its official resize rule gives (pipeline.model_size): the short side
scaled to the reference size (512; the pipeline reads "ref_size" from the export config), each
side floored to a multiple of 32. The search asks how far that reference size can go: the
largest square and the largest 16:9 frame (short side = reference size) within the device
profile's budget, and the memory at the profile's own target size.

MODNet is fully convolutional (the LR branch runs at 1/32 scale, the SE block pools globally),
so every activation grows with the pixel count: peak = a + b·pixels, fitted with no negative
term. Peak host memory of one no-grad forward is measured at a few small sizes, one fresh
process per point (allocator caches would hide growth otherwise): torch eager on seeded-random
weights always, and when an export of this config exists (options["artifacts"]) its FP32 graph
on ONNX Runtime too (CPU arena off), the larger fit taken term by term. Assumptions, those of
the Demucs fit: weights added by size; on a GPU profile a CUDA context is added and FP16 halves
weights and activations. INT8 is counted as FP32: the shipped int8 variant is gated and keeps
the IBNorm insides and the full-resolution tail, the largest activations, in FP32, and ONNX
Runtime dequantizes around every op it keeps, so no saving is assumed. Everything is labelled an
estimate; on a GPU host `xopt profile` measures the real VRAM peak.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from xopt.errors import BudgetError, MissingExtraError, UserError
from xopt.fitting import CUDA_CONTEXT_MB, largest_within, measure_in_fresh_process, nnls
from xopt.models.modnet.pipeline import MAX_MODEL_PIXELS, MULTIPLE, REF_SIZE

# (height, width): squares up to 768 and the default rule's size for a 16:9 frame (1920x1080 ->
# 512x896), about 35 s of fresh processes on a 2-core CPU
POINTS = ((256, 256), (384, 384), (512, 512), (768, 768), (512, 896))
VARIANTS = ("fp32", "fp16", "int8")
WEIGHT_SCALE = {"fp32": 1.0, "fp16": 0.5, "bf16": 0.5, "int8": 1.0}  # INT8 as FP32: see the docstring
ACTIVATION_SCALE = {"fp32": 1.0, "fp16": 0.5, "bf16": 0.5, "int8": 1.0}
MAX_REF_SEARCHED = 32 * 4096  # only bounds the search of what the budget alone allows


def rule_size(ref: int, aspect: tuple[int, int] = (1, 1)) -> tuple[int, int]:
    """(height, width) MODNet's resize rule gives a landscape frame of `aspect` (long, short)
    larger than `ref` on both sides: the short side `ref`, the long side the same arithmetic
    as pipeline.model_size, both floored to a multiple of 32."""
    if ref < MULTIPLE or ref % MULTIPLE:
        raise ValueError(f"reference size {ref} is not a positive multiple of {MULTIPLE}")
    long_side = int(aspect[0] / aspect[1] * ref)
    return ref, long_side - long_side % MULTIPLE


def _feed(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (1, 3, h, w)).astype(np.float32)


def measure_torch(h: int, w: int, seed: int = 0) -> dict:
    """Host peak (MB) of one no-grad forward at h x w above the loaded model (this process),
    the input included."""
    import torch

    from xopt.models.modnet import build
    from xopt.runtime.memory import host_peak_mb, host_rss_mb, reset_host_peak

    built = build(seed=seed)
    params = sum(p.numel() for p in built.module.parameters())
    base = host_rss_mb()
    if not reset_host_peak():
        raise UserError("cannot reset the host peak-memory counter here", "run xopt fit on Linux")
    with torch.inference_mode():
        built.module(torch.from_numpy(_feed(h, w, seed)))
    return {"runtime": "torch", "height": h, "width": w, "pixels": h * w, "activation_mb": host_peak_mb() - base,
            "parameters": int(params), "threads": torch.get_num_threads(), "weights": built.weights.kind}


def measure_ort(artifact: str, h: int, w: int) -> dict:
    """Host peak (MB) of one ONNX Runtime run of an exported graph at h x w above the loaded
    session (CPU arena off: the working set, not the arena's rounded high-water mark)."""
    import onnxruntime as ort

    from xopt.runtime.memory import host_peak_mb, host_rss_mb, reset_host_peak

    so = ort.SessionOptions()
    so.enable_cpu_mem_arena = False
    so.log_severity_level = 3
    sess = ort.InferenceSession(artifact, sess_options=so, providers=["CPUExecutionProvider"])
    base = host_rss_mb()
    if not reset_host_peak():
        raise UserError("cannot reset the host peak-memory counter here", "run xopt fit on Linux")
    sess.run(None, {"input": _feed(h, w)})
    return {"runtime": "onnxruntime", "height": h, "width": w, "pixels": h * w,
            "activation_mb": host_peak_mb() - base, "threads": so.intra_op_num_threads or "default"}


def point(req: dict) -> dict:
    """What `xopt.fitting.measure_in_fresh_process` calls: one torch point or one ORT point."""
    if req.get("artifact"):
        return measure_ort(req["artifact"], int(req["height"]), int(req["width"]))
    return measure_torch(int(req["height"]), int(req["width"]), int(req.get("seed", 0)))


def _measure_in_subprocess(h: int, w: int, artifact: str | None = None) -> dict:
    where = f"{artifact} on ONNX Runtime" if artifact else "torch eager"
    return measure_in_fresh_process("xopt.models.modnet.budget:point",
                                    {"height": h, "width": w, "seed": 0, "artifact": artifact}, timeout=600,
                                    what=f"measuring MODNet at {h}x{w} ({where})",
                                    fix="check that the export extra (torch) and onnxruntime are installed "
                                        "and memory is free")


def fit_curve(points: Sequence[Mapping[str, Any]]) -> dict:
    """Non-negative least squares of activation_mb = a + b·pixels."""
    px = np.array([p["pixels"] for p in points], dtype=np.float64)
    coef, rss = nnls([np.ones_like(px), px], [p["activation_mb"] for p in points])
    return {"a_mb": float(coef[0]), "b_mb_per_pixel": float(coef[1]),
            "rms_residual_mb": float(np.sqrt(rss / len(px))) if len(px) else 0.0}


def predict_mb(curve: Mapping[str, float], pixels: int, weights_mb: float, precision: str, gpu: bool) -> float:
    act = (curve["a_mb"] + curve["b_mb_per_pixel"] * pixels) * ACTIVATION_SCALE[precision]
    return weights_mb * WEIGHT_SCALE[precision] + act + (CUDA_CONTEXT_MB if gpu else 0.0)


def largest_ref(predict: Callable[[int, int], float], budget_mb: float, aspect: tuple[int, int],
                max_ref: int) -> int:
    """The largest reference size (a multiple of 32, at most `max_ref`) whose rule size at
    `aspect` is predicted within `budget_mb`; 0 if not even 32 fits."""
    def mb(k: int) -> float:
        return predict(*rule_size(k * MULTIPLE, aspect))

    return largest_within(mb, budget_mb, max_ref // MULTIPLE) * MULTIPLE


def max_ref_allowed(targets: Mapping[str, Any], aspect: tuple[int, int]) -> tuple[int, str]:
    """The largest reference size the pipeline takes (at most MAX_MODEL_PIXELS after the rule)
    and the profile's max_height/max_width allow at `aspect`, and which limit binds."""
    max_h, max_w = int(targets.get("max_height", 1 << 30)), int(targets.get("max_width", 1 << 30))
    for k in range(1, MAX_REF_SEARCHED // MULTIPLE + 1):
        h, w = rule_size(k * MULTIPLE, aspect)
        why = ("pipeline limit" if h * w > MAX_MODEL_PIXELS else "profile max_height" if h > max_h
               else "profile max_width" if w > max_w else None)
        if why:
            return (k - 1) * MULTIPLE, why
    return MAX_REF_SEARCHED, "search limit"


def _size_result(curve, weights_mb, budget_mb, precision, gpu, aspect, targets) -> dict:
    def predict(h: int, w: int) -> float:
        return predict_mb(curve, h * w, weights_mb, precision, gpu)

    budget_ref = largest_ref(predict, budget_mb, aspect, MAX_REF_SEARCHED)
    cap, cap_what = max_ref_allowed(targets, aspect)
    ref = min(budget_ref, cap)
    if not ref:
        return {"ref_size": 0, "bound": "budget", "budget_ref_size": 0}
    h, w = rule_size(ref, aspect)
    return {"ref_size": ref, "height": h, "width": w, "estimated_peak_mb": round(predict(h, w), 1),
            "bound": "budget" if budget_ref <= cap else cap_what, "budget_ref_size": budget_ref}


def _ort_artifact(cfg: Mapping[str, Any], options: Mapping[str, Any]) -> tuple[str, dict] | None:
    """The FP32 graph of the caller's export of this config (options["artifacts"]), with the
    export's weights record; None without one."""
    from pathlib import Path

    from xopt.manifest import MANIFEST_NAME, load

    if not options.get("artifacts") or not (Path(options["artifacts"]) / MANIFEST_NAME).exists():
        return None
    manifest = load(options["artifacts"])
    if manifest.model != "modnet" or manifest.config != dict(cfg) or not manifest.has("fp32"):
        return None
    return str(manifest.path_of("fp32")), dict(manifest.weights)


def _measure_all(sizes, artifact: str | None, measure) -> list[dict]:
    from xopt import progress

    points = []
    for h, w in sizes:
        label = "ONNX Runtime, the export's FP32 graph" if artifact else "torch eager, seeded-random weights"
        with progress.step(f"modnet: host peak of one forward at {h}x{w} ({label})") as facts:
            points.append(measure(int(h), int(w), artifact))
            facts["note"] = f"{points[-1]['activation_mb']:.0f} MB"
    return points


def _shape_text(r: Mapping[str, Any]) -> str:
    return f"{r['height']}x{r['width']}" if r.get("ref_size") else "-"


def _bound_text(square: Mapping[str, Any], frame: Mapping[str, Any]) -> str:
    """What stops the square and the 16:9 frame, in a word each ("pipeline / budget" when they differ)."""
    def short(r):
        return r["bound"].removeprefix("profile ").removesuffix(" limit")

    return short(square) if square["bound"] == frame["bound"] else f"{short(square)} / {short(frame)}"


def _check_installed() -> None:
    """What the measurement processes import, checked here: one line naming the extra rather
    than a failed child process."""
    import importlib.util

    for module in ("torch", "skimage"):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise MissingExtraError(module, "export", "xopt fit measures a forward of MODNet in torch")


def fit_to_budget(spec, profile, config: Mapping[str, Any] | None, options: Mapping[str, Any]) -> dict:
    """spec.fit: a report of kind "fit" (report_schema): per variant the largest square and
    16:9 frame within the profile's budget, and the memory at the profile's target size."""
    from xopt.machine import describe
    from xopt.report_schema import SCHEMA_VERSION

    cfg = dict(config or spec.config(None))
    sizes = [tuple(s) for s in options.get("points", POINTS)]
    measure = options.get("measure")
    if measure is None:
        _check_installed()
        measure = _measure_in_subprocess
    torch_points = _measure_all(sizes, None, measure)
    torch_curve = fit_curve(torch_points)
    export = _ort_artifact(cfg, options)
    ort_points = _measure_all(sizes, export[0], measure) if export else []
    ort_curve = fit_curve(ort_points) if ort_points else None
    curve = dict(torch_curve)
    if ort_curve:  # the larger line of the two, term by term: an upper bound on both at any size
        curve = {k: max(torch_curve[k], ort_curve[k]) for k in ("a_mb", "b_mb_per_pixel")}
        curve["rms_residual_mb"] = max(torch_curve["rms_residual_mb"], ort_curve["rms_residual_mb"])
    params = torch_points[0]["parameters"]
    weights_mb = params * 4 / 2**20
    gpu = profile.kind == "gpu"
    targets = profile.model_targets("modnet")
    th, tw = int(targets.get("height", REF_SIZE)), int(targets.get("width", REF_SIZE))
    measured = ", ".join(f"{h}x{w}" for h, w in sizes)
    basis = (f"estimate: host-CPU peak of one forward at {measured}, fitted a + b*pixels; torch eager on "
             "seeded-random weights" + (", the larger term by term with ONNX Runtime on the export's FP32 graph"
                                        if ort_curve else ", no export of this config to measure on ONNX Runtime")
             + f"; + weights ({weights_mb:.0f} MB FP32)"
             + (f"; + {CUDA_CONTEXT_MB:.0f} MB CUDA context, FP16 halves weights and activations" if gpu else "")
             + "; INT8 counted as FP32")
    names = [v for v in VARIANTS if v in spec.variants and spec.variants[v].precision in profile.precisions]
    results, rows = [], []
    for name in names:
        precision = spec.variants[name].precision
        at_target = round(predict_mb(curve, th * tw, weights_mb, precision, gpu), 1)
        square = _size_result(curve, weights_mb, profile.budget_mb, precision, gpu, (1, 1), targets)
        frame = _size_result(curve, weights_mb, profile.budget_mb, precision, gpu, (16, 9), targets)
        entry = {"variant": name, "precision": precision, "budget_mb": profile.budget_mb,
                 "target": {"height": th, "width": tw, "estimated_peak_mb": at_target,
                            "fits": at_target <= profile.budget_mb},
                 "square": square, "frame_16_9": frame, "basis": basis}
        if not square["ref_size"]:
            results.append({**entry, "error": "not even 32x32 fits"})
            rows.append([name, at_target, "-", "-", "-", "FAILED: nothing fits"])
            continue
        results.append({**entry, "estimated_peak_mb": square["estimated_peak_mb"]})
        rows.append([name, at_target, _shape_text(square), _shape_text(frame),
                     f"{square['budget_ref_size']}x{square['budget_ref_size']}", _bound_text(square, frame)])
    fitted = [r for r in results if "error" not in r]
    if not fitted:
        raise BudgetError(f"modnet at {MULTIPLE}x{MULTIPLE}", "use a larger device profile")
    # FP16 on GPUs, FP32 on CPUs (FP16 gives no speed-up on ORT CPU), as the Demucs fit chooses
    choice = next((r for r in fitted if gpu and r["precision"] == "fp16"), fitted[0])
    choice_line = {"variant": choice["variant"], "ref_size": choice["frame_16_9"]["ref_size"],
                   "frame_16_9": _shape_text(choice["frame_16_9"]), "square": _shape_text(choice["square"]),
                   f"MB at {th}x{tw}": choice["target"]["estimated_peak_mb"]}
    curve_pts = [{"variant": f"measured ({p['runtime']}, host)", "n": p["pixels"],
                  "peak_mb": round(weights_mb + p["activation_mb"], 1), "measured": True}
                 for p in torch_points + ort_points]
    for r in fitted:
        for px in sorted({th * tw, r["square"]["height"] * r["square"]["width"],
                          r["frame_16_9"]["height"] * r["frame_16_9"]["width"]}):
            curve_pts.append({"variant": f"{r['variant']} (estimate)", "n": px,
                              "peak_mb": round(predict_mb(curve, px, weights_mb, r["precision"], gpu), 1),
                              "measured": False})
    # 80 columns when piped: the estimates at the sizes found are in results and report.html's chart
    head = ["variant", f"MB {th}x{tw}", "max square", "max 16:9", "budget alone", "limit"]
    notes = [f"MB: an {basis}; a = {curve['a_mb']:.1f} MB, b = {curve['b_mb_per_pixel'] * 1e6:.0f} MB per "
             f"million pixels, rms residual {curve['rms_residual_mb']:.1f} MB.",
             f"Sizes follow MODNet's resize rule: short side = ref_size, both sides multiples of {MULTIPLE}. "
             f"limit: what stops the size (the budget; the pipeline, which refuses more than "
             f"{MAX_MODEL_PIXELS / 1e6:.1f} MP; the profile's max_height/max_width); budget alone: the largest "
             "square the budget allows.",
             f"Fits {profile.name} ({profile.budget_mb:.0f} MB budget): {choice['variant']} up to "
             f"{choice_line['frame_16_9']} for 16:9 frames (ref_size {choice_line['ref_size']}), "
             f"{choice_line['square']} square."]
    return {
        "schema_version": SCHEMA_VERSION, "kind": "fit", "model": spec.name,
        "weights": {"kind": "seeded-random", "seed": 0, "note": "torch points on seeded-random weights; memory "
                    "does not depend on weight values" + (f"; ONNX Runtime points on the export's "
                                                          f"{export[1].get('kind', '?')} weights" if export else "")},
        "config": cfg, "covers": spec.covers, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": options.get("command", "xopt fit modnet"), "machine": describe(), "profile": profile.to_json(),
        "settings": {"basis": basis, "points": [list(s) for s in sizes], "aspects": ["1:1", "16:9"],
                     "target": [th, tw], "memory_model": "weights + a + b*pixels (fully convolutional)"},
        "results": results,
        "extra": {"curve": curve_pts, "choice": choice_line,
                  "memory_model": {**curve, "torch": torch_curve, "onnxruntime": ort_curve,
                                   "weights_mb": round(weights_mb, 1), "parameters": params,
                                   "points": torch_points + ort_points,
                                   "artifact": export[0] if export else None},
                  "fit": {"head": head, "rows": rows, "notes": notes},
                  "how measured": {"markdown": "\n\n".join(notes)}},
    }
