"""`xopt report OLD NEW`: per-metric deltas between two profile reports, each with its direction,
and the regression gate CI can use (`--fail-on-regression PCT`).

A latency percentile (model-only or end to end) regresses when it is slower by more than PCT %.
A drift term regresses when it moved the worse way by more than its noise: the FP32 model's own
drift under input noise (the noise floor) for distances such as MAE, one minus the floor for
similarities in [0, 1] such as IoU, and 1 dB for terms in dB such as SDR.
"""
from __future__ import annotations

import math
from typing import Mapping

LATENCY = (("latency_ms", "model"), ("latency_e2e_ms", "e2e"))
PERCENTILES = ("p50", "p90", "p99")
DB_MARGIN = 1.0


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def drift_margin(key: str, higher_is_better: bool, floor: Mapping) -> float:
    if key.endswith("_db"):
        return DB_MARGIN
    f = _num(floor.get(key))
    if f is None:
        return 0.0
    return max(0.0, 1.0 - f) if higher_is_better and f <= 1.0 else abs(f)


def compare_reports(old: dict, new: dict, fail_pct: float | None = None) -> dict:
    """{"rows": [[variant, metric, old, new, delta, verdict]], "regressions": [text], "passed"}."""
    higher = set((new.get("extra") or {}).get("higher_is_better") or ())
    olds = {(r["variant"], r["backend"]): r for r in old["results"]}
    rows, regressions = [], []
    for r in new["results"]:
        key = (r["variant"], r["backend"])
        o = olds.get(key)
        label = f"{r['variant']} ({r['backend']})"
        if o is None:
            rows.append([label, "—", "absent", "present", "", "new variant"])
            continue
        if r.get("error") or o.get("error"):
            rows.append([label, "error", o.get("error") or "ok", r.get("error") or "ok", "",
                         "worse" if r.get("error") and not o.get("error") else "—"])
            if r.get("error") and not o.get("error"):
                regressions.append(f"{label}: now fails: {r['error']}")
            continue
        for field, name in LATENCY:
            for p in PERCENTILES:
                a, b = _num((o.get(field) or {}).get(p)), _num((r.get(field) or {}).get(p))
                if a is None or b is None or a <= 0:
                    continue
                pct = (b - a) / a * 100
                worse = fail_pct is not None and pct > fail_pct
                rows.append([label, f"{name} {p} ms", f"{a:.4g}", f"{b:.4g}", f"{pct:+.1f}%",
                             "worse" if pct > 0 else "better" if pct < 0 else "same"])
                if worse:
                    regressions.append(f"{label}: {name} latency {p} {a:.4g} -> {b:.4g} ms ({pct:+.1f}% > {fail_pct:g}%)")
        floor = r.get("noise_floor") or {}
        for k, b in (r.get("drift") or {}).items():
            a, b = _num((o.get("drift") or {}).get(k)), _num(b)
            if a is None or b is None:
                continue
            hib = k in higher
            delta = b - a
            moved_worse = -delta if hib else delta
            margin = drift_margin(k, hib, floor)
            rows.append([label, f"drift {k}", f"{a:.4g}", f"{b:.4g}", f"{delta:+.3g}",
                         "worse" if moved_worse > 0 else "better" if moved_worse < 0 else "same"])
            if fail_pct is not None and moved_worse > margin:
                regressions.append(f"{label}: drift {k} {a:.4g} -> {b:.4g}, worse by more than its noise ({margin:.3g})")
    return {"rows": rows, "regressions": regressions, "passed": not regressions}
