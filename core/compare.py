"""Compare outputs of two implementations of one model, and gate artifacts on it (numpy only:
the export gate, the profiler and the benchmarks share it)."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from xopt.errors import ParityError


def tensor_stats(ref: np.ndarray, out: np.ndarray) -> dict:
    """max/mean abs error, max relative error (relative to the reference's scale) and cosine."""
    ref = np.asarray(ref, dtype=np.float64)
    out = np.asarray(out, dtype=np.float64)
    if ref.shape != out.shape:
        raise ValueError(f"shape mismatch: reference {ref.shape} vs output {out.shape}")
    finite = bool(np.isfinite(out).all())
    if not finite:
        return {"max_abs": float("inf"), "mean_abs": float("inf"), "max_rel": float("inf"),
                "cosine": float("nan"), "finite": False, "ref_peak": float(np.abs(ref).max(initial=0.0))}
    diff = np.abs(ref - out)
    # Elementwise relative error explodes where the reference crosses zero; measure it against
    # the reference's own magnitude floor (1e-3 of its peak) as Polygraphy's rel tolerance does in effect.
    floor = max(float(np.abs(ref).max()) * 1e-3, 1e-12)
    rel = diff / np.maximum(np.abs(ref), floor)
    denom = float(np.linalg.norm(ref) * np.linalg.norm(out))
    cosine = float(np.dot(ref.ravel(), out.ravel()) / denom) if denom > 0 else float(np.array_equal(ref, out))
    return {"max_abs": float(diff.max(initial=0.0)), "mean_abs": float(diff.mean()) if diff.size else 0.0,
            "max_rel": float(rel.max(initial=0.0)), "cosine": cosine, "finite": True,
            "ref_peak": float(np.abs(ref).max(initial=0.0))}


def compare(ref: Mapping[str, np.ndarray], out: Mapping[str, np.ndarray]) -> dict[str, dict]:
    missing = set(ref) - set(out)
    if missing:
        raise ValueError(f"outputs missing: {sorted(missing)}")
    return {name: tensor_stats(ref[name], out[name]) for name in ref}


def worst(per_feed: list[dict[str, dict]]) -> dict[str, dict]:
    """Worst case of each statistic across several feeds (cosine: the lowest)."""
    merged: dict[str, dict] = {}
    for diffs in per_feed:
        for name, d in diffs.items():
            m = merged.setdefault(name, dict(d))
            for key in ("max_abs", "mean_abs", "max_rel"):
                m[key] = max(m[key], d[key])
            # the scale the combined bound is taken against: the smallest peak is the strictest
            m["ref_peak"] = min(m.get("ref_peak", 0.0), d.get("ref_peak", 0.0))
            m["cosine"] = min(m["cosine"], d["cosine"]) if np.isfinite(d["cosine"]) else d["cosine"]
            m["finite"] = m["finite"] and d["finite"]
    return merged


def combined_bound(d: Mapping[str, float], tolerance: Mapping[str, float]) -> float | None:
    """`atol + rtol * max|reference|`, the allowed max_abs; None when neither is set."""
    if "atol" not in tolerance and "rtol" not in tolerance:
        return None
    return tolerance.get("atol", 0.0) + tolerance.get("rtol", 0.0) * d.get("ref_peak", 0.0)


def passed(diffs: Mapping[str, dict], tolerance: Mapping[str, float]) -> bool:
    for d in diffs.values():
        if not d["finite"]:
            return False
        for key, bound in tolerance.items():
            if key not in ("atol", "rtol") and d[key] > bound:
                return False
        allowed = combined_bound(d, tolerance)
        if allowed is not None and d["max_abs"] > allowed:
            return False
    return True


def check(artifact: str, diffs: Mapping[str, dict], tolerance: Mapping[str, float],
          reference: str = "PyTorch FP32") -> None:
    if not passed(diffs, tolerance):
        raise ParityError(artifact, dict(diffs), dict(tolerance), reference)
