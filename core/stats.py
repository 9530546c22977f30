"""Small numeric helpers shared by the profiler and benchmarks."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def latency_summary(samples_ms: Sequence[float]) -> dict:
    a = np.asarray(samples_ms, dtype=np.float64)
    """Percentiles, mean, and the coefficient of variation (std / mean): above ~10 % the
    machine was busy and the timings are noise."""
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        return {"p50": None, "p90": None, "p95": None, "p99": None, "mean": None, "cv": None, "n": 0, "samples": []}
    p = np.percentile(a, [50, 90, 95, 99])
    mean = float(a.mean())
    return {"p50": float(p[0]), "p90": float(p[1]), "p95": float(p[2]), "p99": float(p[3]),
            "mean": mean, "min": float(a.min()), "cv": float(a.std() / mean) if a.size > 1 and mean > 0 else 0.0,
            "n": int(a.size), "samples": [round(float(x), 4) for x in a]}


def mean_terms(per_item: Sequence[Mapping[str, float]]) -> dict:
    """Average each numeric term over items (frames, segments); booleans are and-ed."""
    if not per_item:
        return {}
    out: dict = {}
    for key in per_item[0]:
        vals = [d[key] for d in per_item if key in d]
        if all(isinstance(v, bool) for v in vals):
            out[key] = all(vals)
        elif all(isinstance(v, (int, float)) for v in vals):
            out[key] = float(np.mean(vals))
        elif all(isinstance(v, Mapping) for v in vals):
            out[key] = mean_terms(vals)
    return out
