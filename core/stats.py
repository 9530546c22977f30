"""Small numeric helpers shared by the profiler and benchmarks."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

NOISY_CV = 0.10  # coefficient of variation above which timings are called noisy (a busy machine)


def latency_summary(samples_ms: Sequence[float]) -> dict:
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


# --- what a reader sees: figures at the precision their noise allows ---------------------------

def figure(v: Any, digits: int = 4) -> str:
    """A number for people: `digits` significant digits, thousands separators from 1,000 up,
    an exponent only below 0.001 (979.7717280002871 -> 979.8, 10445.2 -> 10,445, 1.1224e-06 ->
    1.12e-06). Anything else is shown as it is."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    v = float(v)
    if not math.isfinite(v) or v == 0:
        return f"{v:g}"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 1e-3:
        return f"{v:.{digits}g}"
    return f"{v:.{max(digits - 2, 1)}e}"


def megabytes(v: Any) -> str:
    """10,445 MB (never 1.044e+04 MB)."""
    return f"{float(v):,.0f} MB" if isinstance(v, (int, float)) and not isinstance(v, bool) else f"{v} MB"


def facts_text(facts: Mapping[str, Any]) -> str:
    """'key=value, ...' for the scalar facts of a step, each value through `figure`."""
    return ", ".join(f"{k}={figure(v)}" for k, v in facts.items()
                     if v is not None and not isinstance(v, (list, dict, tuple)))


def spread(lat: Mapping[str, Any] | None) -> tuple[float, float] | None:
    """A timing's spread: its median ± one standard deviation (cv × mean); None without a median."""
    if not lat or not isinstance(lat.get("p50"), (int, float)):
        return None
    p50 = float(lat["p50"])
    cv = lat.get("cv") if isinstance(lat.get("cv"), (int, float)) else 0.0
    sd = float(cv) * float(lat.get("mean") or p50)
    return p50 - sd, p50 + sd


def overlap(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """True when the spreads of two timings overlap: their difference is not measurable."""
    sa, sb = spread(a), spread(b)
    if sa is None or sb is None:
        return True
    return sa[0] <= sb[1] and sb[0] <= sa[1]


def noisy(*lats: Mapping[str, Any] | None) -> bool:
    """Any of the timings varied by more than NOISY_CV: the machine was busy."""
    return any(isinstance((lat or {}).get("cv"), (int, float)) and lat["cv"] > NOISY_CV for lat in lats)


def timing_ms(lat: Mapping[str, Any] | None, key: str = "p50") -> str:
    """A latency rounded to what its noise allows: the last digit kept is the one the standard
    deviation reaches (979.77 ms with a 5 % CV -> "980 ms"; 12.34 ms with 0.1 % -> "12.34 ms")."""
    if not lat or not isinstance(lat.get(key), (int, float)):
        return "–"
    v = float(lat[key])
    sd = float(lat.get("cv") or 0.0) * float(lat.get("mean") or v)
    if sd > 0 and v > 0:  # the digit the deviation reaches, keeping at least two significant digits
        step = min(10 ** math.floor(math.log10(sd)), 10 ** (math.floor(math.log10(v)) - 1))
        decimals = max(0, -int(math.floor(math.log10(step))))
        v = round(v / step) * step
        text = f"{v:,.{min(decimals, 3)}f}"
    else:
        text = figure(v)
    return f"{text} ms"
