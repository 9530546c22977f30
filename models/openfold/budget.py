"""Fit OpenFold to a device budget: per variant (chunk setting x precision) the longest chain
whose trunk fits the profile's memory budget, and the time per prediction at a few lengths.

Memory model. Evoformer blocks run one after another, so the peak is
    weights(all parameters, at the variant's precision) + trunk(N)
where trunk(N) -- m and z plus the largest transient of one block -- is measured on one
block in a fresh process per point and fitted by non-negative least squares on
    1, N, N^2, k*N, k*N^2        with k = min(chunk, N)  (k = N unchunked)
k*N^2 is the attention logits (triangle attention: heads*k*N*N per chunk of k rows, the
unchunked 4*N^3 term), k*N the chunked transitions and outer product. Because k = N until N
exceeds the chunk, points below the chunk size still pin the per-logit cost that applies
above it. On a GPU the points are allocator peaks under the profile's cap ("measured"); on a
CPU they are host peaks at small N, extrapolated ("estimate"). Not in the model: the
extra-MSA stack (small in single-sequence mode, S_e*N*c_e per activation with an
alignment), CUDA context and allocator fragmentation (the profile's headroom covers those).

Time: seconds of one block at each measured N, fitted on 1, N, N^2, N^3, times blocks and
recycling iterations. On a CPU that is single-thread process CPU time of this host, reported
as such, not the device's.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from xopt.errors import BudgetError
from xopt.fitting import largest_within, measure_in_fresh_process, nnls, parse_chunk

CHUNKS = (None, 64, 16, 4)
CPU_POINTS = {"tiny": (16, 24, 32, 48, 64), "default": (32, 48, 64, 96, 128)}
GPU_POINTS = (64, 128, 192, 256, 384)
MAX_SEARCH = 16384
_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


def variant_name(precision: str, chunk: int | None) -> str:
    return f"{precision}-" + (f"chunk{chunk}" if chunk else "unchunked")


def variant_settings(precision: str, chunk: int | None) -> dict:
    """Trunk settings of a fit/bench variant. Chunked variants also step OpenFold's in-place
    triangle multiplication 8*chunk rows at a time (its default of 256 rows saves nothing up
    to 256 residues; at N=256, S=128 this takes chunk-4 peaks from 3.1x to 4.1x below
    unchunked on one block)."""
    return {"precision": precision, "chunk_size": chunk, "tri_mul_chunk": min(256, 8 * chunk) if chunk else None}


def _run_point(req: dict, timeout: float = 900.0) -> dict:
    return measure_in_fresh_process("xopt.models.openfold.measure:point", req, timeout=timeout,
                                    what=f"openfold measurement ({req.get('settings')}, N={req.get('n')})",
                                    fix="check the openfold install (models/openfold/install.py) and free memory")


def _basis(n, chunk, kind: str) -> np.ndarray:
    n = np.asarray(n, np.float64)
    if kind == "time":
        return np.stack([np.ones_like(n), n, n ** 2, n ** 3], axis=-1)
    k = n if chunk is None else np.minimum(float(chunk), n)
    return np.stack([np.ones_like(n), n, n ** 2, k * n, k * n ** 2], axis=-1)


def fit_curve(ns, ys, chunk, kind: str) -> list[float]:
    """Non-negative least-squares coefficients of `_basis`."""
    a = _basis(ns, chunk, kind)
    coef, _ = nnls(list(a.T), ys)
    return [float(c) for c in coef]


def eval_curve(coef, n, chunk, kind: str) -> float:
    return float(_basis([float(n)], chunk, kind)[0] @ np.asarray(coef))


def _on_gpu() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def fit_variants(cfg: Mapping[str, Any], budget_mb: float, precisions, chunks=CHUNKS, points=None,
                 msa_rows: int | None = None, residues=(), gpu: bool | None = None, progress=None) -> dict:
    """Measure and fit every (chunk, precision); returns rows, curve points and the fits."""
    gpu = _on_gpu() if gpu is None else gpu
    preset = cfg.get("preset", "default")
    points = tuple(points or (GPU_POINTS if gpu else CPU_POINTS.get(preset, CPU_POINTS["default"])))
    s = int(msa_rows or cfg.get("msa_depth", 512))
    params = _run_point({"what": "parameters", "config": dict(cfg)})
    blocks, iters = params["blocks"], int(cfg.get("recycles", 3)) + 1
    fits = {}
    curve = []
    for precision in precisions:
        for chunk in chunks:
            name = variant_name(precision, chunk)
            settings = variant_settings(precision, chunk)
            weights_mb = params["total"] * _BYTES[precision] / 2**20
            measured = []
            for n in points:
                if progress:
                    progress(f"{name}: N={n}")
                r = _run_point({"config": dict(cfg), "settings": settings, "s": s, "n": n,
                                "device": "cuda" if gpu else "cpu", "cap_mb": budget_mb,
                                "repeats": 2 if n <= 64 else 1, "threads": None if gpu else 1})
                if r.get("oom") or not r.get("finite", True):
                    break
                # on a CPU, single-thread process time: a shared host's wall clock mostly measures
                # the neighbours
                sec = r["seconds"] if gpu else r.get("cpu_seconds", r["seconds"])
                measured.append((n, r["peak_mb"], sec))
                curve.append({"variant": name, "n": n, "peak_mb": round(weights_mb + r["peak_mb"], 1),
                              "seconds": round(sec * blocks * iters, 3), "measured": True})
            if len(measured) < 3:
                fits[name] = {"error": "fewer than 3 finite points (NaN/Inf or out of memory)"}
                continue
            ns, mem, sec = zip(*measured)
            mem_c, t_c = fit_curve(ns, mem, chunk, "memory"), fit_curve(ns, sec, chunk, "time")
            predict = lambda n, c=mem_c, ch=chunk, w=weights_mb: w + eval_curve(c, n, ch, "memory")  # noqa: E731
            per_pred = lambda n, c=t_c: eval_curve(c, n, None, "time") * blocks * iters  # noqa: E731
            n_max = largest_within(predict, budget_mb, MAX_SEARCH)
            if gpu:  # pragma: no cover - GPU machines only: replace the estimate by real runs
                n_max = _gpu_search(cfg, settings, s, budget_mb - weights_mb, n_max)
            for n in sorted(set(int(x) for x in residues) | {n_max} - {0}):
                curve.append({"variant": name, "n": n, "peak_mb": round(predict(n), 1),
                              "seconds": round(per_pred(n), 2), "measured": False})
            fits[name] = {"precision": precision, "chunk_size": chunk, "weights_mb": round(weights_mb, 1),
                          "memory_coef": mem_c, "time_coef": t_c, "max_residues": n_max, "points": len(measured),
                          "blocks": blocks, "iterations": iters,
                          "seconds": {int(n): round(per_pred(n), 2) for n in residues}}
    return {"fits": fits, "curve": curve, "parameters": params, "msa_rows": s, "points": list(points),
            "blocks": blocks, "iterations": iters, "basis": "measured (GPU)" if gpu else "estimate (CPU host peaks)"}


def _gpu_search(cfg, settings, s: int, cap_mb: float, guess: int) -> int:  # pragma: no cover - needs a GPU
    """Largest N whose trunk runs on the GPU under `cap_mb` (the budget minus all weights),
    by bisection around the fitted guess; each probe is a fresh process."""
    def fits(n):
        r = _run_point({"config": dict(cfg), "settings": settings, "s": s, "n": n, "device": "cuda",
                        "cap_mb": cap_mb})
        return not r.get("oom") and r.get("finite", False) and r["peak_mb"] <= cap_mb

    lo, hi = 0, max(64, int(guess * 1.25))
    while fits(hi) and hi < MAX_SEARCH:
        lo, hi = hi, hi * 2
    while hi - lo > 16:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def choose(fits: Mapping[str, dict], residues: int, precision: str | None = None) -> dict:
    """The chunk setting that fits `residues` with the least slowdown. Chunking only adds work
    (smaller pieces, more steps), so that is the largest chunk that fits -- unchunked first;
    the fitted times are reported, not used to rank (extrapolated from small N they are too
    noisy to order settings that differ by a few percent). Raises BudgetError if none fits."""
    ok = [(name, f) for name, f in fits.items() if "error" not in f and (precision is None or f["precision"] == precision)]
    fitting = [(n, f) for n, f in ok if f["max_residues"] >= residues]
    if not fitting:
        best = max(ok, key=lambda nf: nf[1]["max_residues"], default=None)
        hint = f"; the most is {best[1]['max_residues']} residues with {best[0]}" if best else ""
        raise BudgetError(f"a {residues}-residue chain", f"no measured chunk setting fits{hint}: use a bigger "
                          "device profile, FP16/BF16, or shorter chains")

    def t(f):
        return eval_curve(f["time_coef"], residues, None, "time")

    name, f = min(fitting, key=lambda nf: (-(nf[1]["chunk_size"] or 1 << 30), t(nf[1])))
    unchunked = fits.get(variant_name(f["precision"], None), {})
    slowdown = t(f) / t(unchunked) if "time_coef" in unchunked and t(unchunked) > 0 else None
    return {"variant": name, "precision": f["precision"], "chunk_size": f["chunk_size"],
            "max_residues": f["max_residues"], "residues": residues,
            "slowdown_vs_unchunked": round(slowdown, 3) if slowdown else None}


def fit_report(spec, profile, config: Mapping[str, Any], options: Mapping[str, Any]) -> dict:
    """spec.fit: report dict of kind "fit" (report_schema) with the curve under extra.curve."""
    from xopt import progress
    from xopt.models.openfold import _cfg
    from xopt.machine import describe
    from xopt.report_schema import SCHEMA_VERSION

    cfg = _cfg(config)
    targets = profile.model_targets("openfold")
    residues = [int(r) for r in options.get("residues", targets.get("residues", [128, 256]))]
    precisions = [p for p in options.get("precisions", ("fp32", "bf16", "fp16")) if p in profile.precisions] or ["fp32"]
    with progress.step(f"openfold: fit {len(precisions) * len(CHUNKS)} variants to {profile.name} "
                       f"({profile.budget_mb:.0f} MB budget)") as facts:
        res = fit_variants(cfg, profile.budget_mb, precisions, options.get("chunks", CHUNKS), options.get("points"),
                           options.get("msa_rows"), residues)
        facts["note"] = res["basis"]
    results, rows = [], []
    for name, f in res["fits"].items():
        if "error" in f:
            results.append({"variant": name, "error": f["error"]})
            rows.append([name, "-", "-", "FAILED: " + f["error"]] + ["-"] * len(residues))
            continue
        results.append({"variant": name, "precision": f["precision"], "chunk_size": f["chunk_size"],
                        "max_residues": f["max_residues"], "seconds_per_prediction": f["seconds"],
                        "weights_mb": f["weights_mb"], "basis": res["basis"]})
        rows.append([name, f["precision"], f["chunk_size"] or "none", f["max_residues"]]
                    + [f["seconds"].get(r, "-") for r in residues])
    choice = None
    try:
        choice = choose(res["fits"], max(residues))
    except BudgetError as exc:
        choice = {"error": str(exc)}
    time_label = "s/prediction (GPU)" if res["basis"].startswith("measured") else "host CPU-s/prediction (1 thread)"
    return {
        "schema_version": SCHEMA_VERSION, "kind": "fit", "model": "openfold",
        "weights": {"kind": "seeded-random", "seed": 0, "note": "memory and time do not depend on weight values"},
        "config": dict(config), "covers": spec.covers, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": options.get("command", "xopt fit openfold"), "machine": describe(), "profile": profile.to_json(),
        "settings": {"basis": res["basis"], "msa_rows": res["msa_rows"], "points": res["points"],
                     "blocks": res["blocks"], "iterations": res["iterations"],
                     "memory_model": "weights + trunk(N); trunk fitted on 1, N, N^2, kN, kN^2 with k=min(chunk,N)"},
        "results": results,
        "extra": {"curve": res["curve"], "choice": choice, "parameters": res["parameters"], "fits": res["fits"],
                  "fit": {"head": ["variant", "precision", "chunk", f"max residues ({res['basis']})"]
                          + [f"{time_label} @N={r}" for r in residues], "rows": rows}},
    }


def chunk_options(value, profile, config_name=None, options: Mapping[str, Any] | None = None) -> dict:
    """The fit hook for `xopt export --chunk VALUE`: config overrides. `auto` picks, from a fit
    (reusing the report at options["fit_report"] when it matches), the chunk size that fits
    the profile's longest target with the least slowdown, and sizes the bucket to it."""
    from xopt.models.openfold import _cfg

    value = parse_chunk(value, ("auto", "none", "off", "0", "lma"), int, "16")
    if value in ("none", "off", "0"):
        return {"chunk_size": None, "lma": False}
    if value == "lma":
        return {"lma": True}
    if value != "auto":
        return {"chunk_size": value}
    cfg = _cfg({"preset": config_name or "default"})
    targets = profile.model_targets("openfold")
    want = max(int(r) for r in targets.get("residues", [256]))
    fits = _cached_fits((options or {}).get("fit_report"), profile, cfg)
    if fits is None:
        fits = fit_variants(cfg, profile.budget_mb, ["fp32"], CHUNKS, residues=[want])["fits"]
    choice = choose(fits, want, "fp32")
    out = {"chunk_size": choice["chunk_size"], "lma": False, "chunk_choice": choice}
    if choice["chunk_size"]:
        out["bucket_residues"] = -(-want // 64) * 64  # the bucket graph must hold the longest target
    return out


def _cached_fits(path, profile, cfg) -> dict | None:
    """The fits of a previous `xopt fit openfold` report at `path` for the same profile and config."""
    if not path:
        return None
    try:
        rep = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    same = (rep.get("profile", {}).get("name") == profile.name
            and rep.get("config", {}).get("preset") == cfg.get("preset")
            and rep.get("settings", {}).get("msa_rows") == int(cfg.get("msa_depth", 512)))
    fits = (rep.get("extra") or {}).get("fits")
    return fits if same and isinstance(fits, dict) and fits else None
