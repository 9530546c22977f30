"""The comparison report of a sweep (kind "sweep"): points x metrics, the fastest variant that
meets its drift gate per (model, shape, device), and how latency and memory scale with input
size. JSON first; Markdown and HTML come from the shared report renderer."""
from __future__ import annotations

import math
import time

import numpy as np

from xopt.analysis.report import NOISY_CV, _md_table, _num

POINT_HEAD = ["model", "variant", "backend", "shape", "profile", "status", "model p50 ms", "p90", "p99", "CV", "fps",
              "e2e p50 ms", "peak MB", "drift gate", "drift", "node", "device"]


def _gate(result: dict) -> bool | str | None:
    """True/False: the drift gate's verdict; "not applied": measured on seeded-random weights,
    where a failing gate means nothing (xopt.gate.applies); None: nothing to judge by."""
    gate = result.get("drift_gate")
    if isinstance(gate, dict):
        if gate.get("passed") is not None:
            return bool(gate["passed"])
        if gate.get("applied") is False:
            return "not applied"
    return bool(result.get("drift_ok")) if "drift_ok" in result else None


def _input_elements(rec: dict) -> int | None:
    """Size of a point's input: elements of its largest input tensor, as measured."""
    inputs = (rec.get("measured") or {}).get("inputs") or {}
    sizes = [math.prod(s) for s in inputs.values() if isinstance(s, list) and all(isinstance(d, int) for d in s)]
    return max(sizes) if sizes else None


def point_row(rec: dict, drift_key: str | None = None) -> dict:
    r = rec.get("result") or {}
    lat, e2e = r.get("latency_ms") or {}, r.get("latency_e2e_ms") or {}
    gate = _gate(r) if r else None
    drift = r.get("drift") or {}
    key = drift_key or next((k for k, v in drift.items() if isinstance(v, (int, float)) and not isinstance(v, bool)),
                            None)
    node = rec.get("node") or {}
    return {"key": rec.get("key"), "model": rec["model"], "variant": rec["variant"], "backend": rec["backend"],
            "shape": rec.get("shape_text"), "profile": rec["profile"], "status": rec["status"],
            "p50_ms": lat.get("p50"), "p90_ms": lat.get("p90"), "p99_ms": lat.get("p99"), "cv": lat.get("cv"),
            "fps": r.get("fps"), "e2e_p50_ms": e2e.get("p50"), "peak_mb": (r.get("memory") or {}).get("peak_mb"),
            "memory_kind": (r.get("memory") or {}).get("kind"), "drift_gate": gate,
            "drift_key": key, "drift": drift.get(key) if key else None,
            "node": node.get("ip") or node.get("hostname"), "device": rec.get("device"),
            "input_elements": _input_elements(rec), "error": rec.get("error")}


def _cells(p: dict) -> list[str]:
    gate = {True: "pass", False: "FAIL", None: "–", "not applied": "not applied"}[p["drift_gate"]]
    status = p["status"] if not p["error"] else f"{p['status']}: {p['error'][:120]}"
    drift = f"{p['drift_key']}={p['drift']:.4g}" if isinstance(p["drift"], (int, float)) else "–"
    cv = f"{p['cv']:.0%}" if p["cv"] is not None else "–"
    return [p["model"], p["variant"], p["backend"], p["shape"], p["profile"], status, _num(p["p50_ms"]),
            _num(p["p90_ms"]), _num(p["p99_ms"]), cv, _num(p["fps"]), _num(p["e2e_p50_ms"]),
            f"{_num(p['peak_mb'])} ({p['memory_kind']})" if p["peak_mb"] is not None else "–", gate, drift,
            p["node"] or "–", p["device"] or "–"]


def fastest(points: list[dict]) -> list[dict]:
    """Per (model, shape, device, profile): the lowest model-only p50 among points that were
    measured and pass their drift gate, with its speed-up over FP32 on the same backend."""
    groups: dict = {}
    for p in points:
        groups.setdefault((p["model"], p["shape"], p["device"], p["profile"]), []).append(p)
    out = []
    for (model, shape, device, profile), ps in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        ok = [p for p in ps if p["status"] == "ok" and p["drift_gate"] and p["p50_ms"]]
        missed = sorted({f"{p['variant']} ({p['backend']})" for p in ps if p["status"] == "ok" and not p["drift_gate"]})
        unjudged = sorted({f"{p['variant']} ({p['backend']})" for p in ok if p["drift_gate"] == "not applied"})
        best = min(ok, key=lambda p: p["p50_ms"]) if ok else None
        base = next((p for p in ps if p["variant"] == "fp32" and best and p["backend"] == best["backend"]
                     and p["p50_ms"]), None)
        out.append({"model": model, "shape": shape, "device": device, "profile": profile,
                    "variant": best and best["variant"], "backend": best and best["backend"],
                    "p50_ms": best and best["p50_ms"], "peak_mb": best and best["peak_mb"],
                    "speedup_vs_fp32": (base["p50_ms"] / best["p50_ms"]) if best and base else None,
                    "candidates": len(ok), "missed_gate": missed, "gate_not_applied": unjudged})
    return out


def _slope(xs, ys) -> float | None:
    pts = [(x, y) for x, y in zip(xs, ys) if x and y and x > 0 and y > 0]
    if len({x for x, _ in pts}) < 2:
        return None
    b, _ = np.polyfit(np.log([x for x, _ in pts]), np.log([y for _, y in pts]), 1)
    return float(b)


def scaling(points: list[dict]) -> list[dict]:
    """Per (model, variant, backend, device, profile) measured at two or more input sizes: p50 and
    peak memory at each size, and the exponent b of p50 ~ size^b (1: linear in the input)."""
    groups: dict = {}
    for p in points:
        if p["status"] == "ok" and p["input_elements"]:
            groups.setdefault((p["model"], p["variant"], p["backend"], p["device"], p["profile"]), []).append(p)
    out = []
    for (model, variant, backend, device, profile), ps in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        ps = sorted(ps, key=lambda p: p["input_elements"])
        if len({p["input_elements"] for p in ps}) < 2:
            continue
        xs = [p["input_elements"] for p in ps]
        out.append({"model": model, "variant": variant, "backend": backend, "device": device, "profile": profile,
                    "sizes": [{"shape": p["shape"], "input_elements": p["input_elements"], "p50_ms": p["p50_ms"],
                               "peak_mb": p["peak_mb"]} for p in ps],
                    "latency_exponent": _slope(xs, [p["p50_ms"] for p in ps]),
                    "memory_exponent": _slope(xs, [p["peak_mb"] for p in ps])})
    return out


def _section(head, rows, note: str = "") -> dict:
    return {"head": head, "rows": rows, "markdown": (note + "\n\n" if note else "") + _md_table(head, rows)}


def _noisy(points: list[dict]) -> str:
    noisy = [p for p in points if (p["cv"] or 0) > NOISY_CV]
    if not noisy:
        return ""
    worst = max(p["cv"] for p in noisy)
    return (f"> ⚠ {len(noisy)} point(s) have timings that vary by more than {NOISY_CV:.0%} (up to {worst:.0%}): the "
            "machine was busy; re-run those on an idle node before comparing speeds.")


def _weights(records: list[dict]) -> dict:
    kinds = sorted({(r.get("weights") or {}).get("kind", "?") for r in records if r.get("weights")})
    return {"kind": kinds[0] if len(kinds) == 1 else ("mixed: " + ", ".join(kinds) if kinds else "unknown")}


def build(sweep, records: list[dict], counts: dict, where: str, command: str) -> dict:
    """The report dict for the sweep's points (`records`, one per point, in sweep order)."""
    from xopt.machine import describe
    from xopt.report_schema import SCHEMA_VERSION

    points = [point_row(r) for r in records]
    fast = fastest(points)
    scale = scaling(points)
    fast_rows = [[f["model"], f["shape"], f["device"] or "–", f["profile"],
                  f"{f['variant']} ({f['backend']})" if f["variant"] else "none meets its gate",
                  _num(f["p50_ms"]), _num(f["peak_mb"]),
                  f"{f['speedup_vs_fp32']:.2f}x" if f["speedup_vs_fp32"] else "–", ", ".join(f["missed_gate"]) or "–"]
                 for f in fast]
    scale_rows = [[s["model"], s["variant"], s["backend"], s["device"] or "–",
                   "; ".join(f"{z['shape']}: {_num(z['p50_ms'])} ms, {_num(z['peak_mb'])} MB" for z in s["sizes"]),
                   "–" if s["latency_exponent"] is None else f"{s['latency_exponent']:.2f}",
                   "–" if s["memory_exponent"] is None else f"{s['memory_exponent']:.2f}"] for s in scale]
    failed = [[r["model"], r["variant"], r["backend"], r.get("shape_text", ""), r.get("error") or ""]
              for r in records if r["status"] == "failed"]
    extra = {
        "drift_keys": [],
        "Fastest variant within its drift gate": _section(
            ["model", "shape", "device", "profile", "fastest", "p50 ms", "peak MB", "vs FP32", "missed the gate"],
            fast_rows, "Per model, input shape and device: the lowest model-only p50 among the variants that pass "
                       "their drift gate (FP32 on the same backend is the reference for the speed-up)."),
        "Scaling with input size": _section(
            ["model", "variant", "backend", "device", "sizes", "latency exponent", "memory exponent"], scale_rows,
            "Exponent b of p50 ~ (input elements)^b and of peak memory, fitted on a log-log scale: 1 is linear "
            "in the input size; memory exponents well below 1 mean fixed costs (weights, runtime) dominate."),
        "Points": _section(POINT_HEAD, [_cells(p) for p in points], _noisy(points)),
    }
    if failed:
        extra["Failed points"] = _section(["model", "variant", "backend", "shape", "error"], failed,
                                          "Failed points are tried again when the sweep is re-run.")
    models = list(dict.fromkeys(r["model"] for r in records))
    return {
        "schema_version": SCHEMA_VERSION, "kind": "sweep", "model": ", ".join(models) or "sweep",
        "weights": _weights(records), "config": {},
        "profile": {"name": ", ".join(dict.fromkeys(r["profile"] for r in records)),
                    "description": "the device profile of each point is in its row"}, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command, "machine": describe(),
        "settings": {"sweep": str(sweep.path), "points": len(records), **counts, "ran on": where,
                     "results": "results.json (every point's full profile result)"},
        "results": [], "points": points, "fastest": fast, "scaling": scale,
        "title": f"sweep {sweep.path.name}: {len(records)} points", "head": POINT_HEAD,
        "rows": [_cells(p) for p in points], "extra": extra,
    }
