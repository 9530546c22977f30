"""The verdict a report opens with: one line per variant (speed against FP32 end to end and
model-only, drift against the gate in the model's units, memory against the device budget,
what this machine cannot measure) and which variant to ship for the device profile.

Computed from the report JSON only, so the terminal, report.md and report.html say the same.
"""
from __future__ import annotations

import math

from xopt.stats import figure, megabytes, timing_ms

# On a GPU profile measured on a CPU host the speed on the device is unknown; the variant
# suggested is the first precision here that passes: FP16/BF16 run on tensor cores through
# ONNX Runtime's CUDA EP, while QDQ INT8 pays off only as a TensorRT engine.
GPU_PREFERENCE = ("fp16", "bf16", "mixed", "fp32", "int8")
HALF = ("fp16", "bf16")


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _p50(r: dict, key: str) -> float | None:
    return _num((r.get(key) or {}).get("p50"))


def baseline(report: dict) -> dict | None:
    ok = [r for r in report.get("results", []) if not r.get("error")]
    return next((r for r in ok if r["variant"] == "fp32"), next((r for r in ok if r.get("precision") == "fp32"), None))


def _inverted(r: dict) -> bool:
    """Model-only slower than end to end (which contains it): only noise does that."""
    return _inversion(r) > 0


def _inversion(r: dict) -> float:
    """How far model-only lies above the end to end that contains it (0.07: 7 %): a lower bound
    on this run's timing noise."""
    e2e, model = _p50(r, "latency_e2e_ms"), _p50(r, "latency_ms")
    return max(0.0, model / e2e - 1.0) if e2e and model else 0.0


def speed_text(r: dict, base: dict | None) -> str:
    """Speed against the FP32 baseline, end to end and model-only; "no measurable difference"
    instead of a ratio where the timings' spreads overlap, or where the two ratios disagree
    in direction (one faster, one slower: noise decided both)."""
    from xopt.analysis.verdicts import no_difference, speed_verdict

    e2e, model = _p50(r, "latency_e2e_ms"), _p50(r, "latency_ms")
    if base is None or base is r:  # each figure rounded to what its own noise allows
        parts = [f"{timing_ms(r.get('latency_e2e_ms'))} end to end" if e2e else None,
                 f"{timing_ms(r.get('latency_ms'))} model-only" if model else None]
        text = ("the FP32 baseline: " if base is r else "no FP32 timing to compare with: ") + \
            ", ".join(p for p in parts if p)
        if _inverted(r):
            text += " (model-only above end to end, which contains it: timing noise on this busy machine)"
        return text
    found = [(name, speed_verdict(r.get(key), base.get(key))) for name, key in
             (("end to end", "latency_e2e_ms"), ("model-only", "latency_ms"))
             if _p50(r, key) and _p50(base, key)]
    if not found:
        return "no timing"
    # model-only above the end to end that contains it: the run's noise is at least that large, so
    # only a difference beyond it on both timings (each off by up to that much) counts as measured
    noise = max(_inversion(r), _inversion(base))
    if noise:
        found = [(name, {**v, "busy": True, "measurable": v["measurable"] and
                         abs(math.log(v["ratio"])) > math.log(1 + 2 * noise)}) for name, v in found]
    busy = any(v["busy"] for _, v in found) or _inverted(r) or _inverted(base)
    measured = [(name, v) for name, v in found if v["measurable"]]
    if not measured or len({v["ratio"] >= 1 for _, v in measured}) > 1:
        return no_difference(busy)
    text = ", ".join(f"{v['text']} {name}" if v["measurable"] else f"no measurable difference {name}"
                     for name, v in found)
    slower = all(v["ratio"] < 1 for _, v in measured)
    if slower and r.get("precision") in HALF and str(r.get("backend", "")).startswith("ort-cpu"):
        text += (" (expected on a CPU: ONNX Runtime's CPU kernels run FP16 graphs through casts to FP32; "
                 "FP16 pays off on a GPU)")
    return text


def _val(v, unit: str = "") -> str:
    n = _num(v)
    return f"{figure(n)}{unit}" if n is not None else str(v)


def drift_text(r: dict, report: dict) -> str:
    g = r.get("drift_gate") or {}
    if not g:
        return "no drift gate recorded"
    tensor = (r.get("drift") or {}).get("tensor") or {}
    if tensor and all(t.get("max_abs") == 0 for t in tensor.values()):
        return "outputs identical to the FP32 reference"
    unit = g.get("unit") or ""
    ratio = _num(g.get("ratio_to_noise"))
    noise = f"{ratio:.1f}× the noise floor" if ratio is not None else None
    bound = _num(g.get("bound"))
    sign = "≥" if g.get("higher_is_better") else "≤"
    limit = f"gate {sign} {bound:.4g}{unit}" if bound is not None else None
    detail = "; ".join(p for p in (noise, limit) if p)
    value = f"{g.get('key')} {_val(g.get('value'), unit)}"
    if g.get("passed") is None and g.get("applied") is False:
        return f"{value}" + (f" ({noise})" if noise else "") + "; drift gate not applied (seeded-random weights)"
    if not g.get("passed"):
        why = g.get("text") if g.get("value") is None or _num(g.get("value")) is None else detail
        return f"fails its drift gate: {value} ({why})"
    text = f"{value}, within its drift gate" + (f" ({detail})" if detail else "")
    keys = list((report.get("extra") or {}).get("drift_keys") or [])
    higher = set((report.get("extra") or {}).get("higher_is_better") or ())
    head = keys[0] if keys else None
    if head and head != g.get("key") and _num((r.get("drift") or {}).get(head)) is not None:
        units = (report.get("extra") or {}).get("drift_units") or {}
        unit = f"{units[head]}; " if units.get(head) else ""
        text += f"; {head} {_val(r['drift'][head])} ({unit}{'↑ higher' if head in higher else '↓ lower'} is better)"
    return text


def _memory_check(r: dict) -> dict | None:
    return next((c for c in (r.get("budget") or {}).get("checks", []) if c["name"].startswith("memory within")), None)


def memory_text(r: dict, report: dict) -> str:
    c, mem = _memory_check(r), r.get("memory") or {}
    peak = _num(mem.get("peak_mb"))
    if peak is None:
        return "memory not measured"
    basis = "VRAM" if mem.get("kind") == "vram-nvml" else "host RSS, a proxy for VRAM" \
        if (report.get("profile") or {}).get("kind") == "gpu" else "host RSS"
    if c is None or _num(c.get("limit")) is None:
        return f"{megabytes(peak)} ({basis})"
    within = "within" if c.get("passed") else "OVER"
    return f"{megabytes(peak)} ({basis}), {within} the {megabytes(c['limit'])} budget"


def other_checks(r: dict) -> list[str]:
    out = []
    for c in (r.get("budget") or {}).get("checks", []):
        if c["name"].startswith(("memory within", "drift within")):
            continue
        if c.get("passed") is None:
            continue  # said once for the report: not_measured_line
        if not c["passed"]:
            out.append(f"FAILS {c['name']}: {_val(c.get('value'))} vs {_val(c.get('limit'))} {c.get('unit', '')}".strip())
    return out


def worst_layers(r: dict, report: dict) -> str:
    layers = r.get("layer_drift") or []
    names = [str(x.get("group")) for x in layers[:3] if isinstance(x, dict) and x.get("group")]
    return f"worst layers: {', '.join(names)}" if names and not (r.get("drift_gate") or {}).get("passed") else ""


def variant_line(r: dict, report: dict, base: dict | None) -> str:
    if r.get("error"):
        return f"{r['variant']} — FAILED: {r['error']}"
    parts = [speed_text(r, base), drift_text(r, report), memory_text(r, report), *other_checks(r),
             worst_layers(r, report)]
    return f"{r['variant']} ({r['backend']}) — " + "; ".join(p for p in parts if p)


def not_measured_line(report: dict) -> str:
    """The device targets this machine cannot measure (a GPU profile's speed on a CPU host), once."""
    seen: dict[str, str] = {}
    for r in report.get("results", []):
        for c in (r.get("budget") or {}).get("checks", []):
            if c.get("passed") is None and not c["name"].startswith("drift within"):
                seen.setdefault(c["name"], c.get("status") or "not measured here")
    if not seen:
        return ""
    why = next(iter(seen.values())).replace("not measured here", "").strip(" —:")
    return f"Not measured here{f' ({why})' if why else ''}: {', '.join(seen)}".replace("((", "(").replace("))", ")")


def passes(r: dict) -> bool:
    return not r.get("error") and (r.get("drift_gate") or {}).get("passed") is not False and \
        all(c.get("passed") is not False for c in (r.get("budget") or {}).get("checks", []))


def ship_line(report: dict) -> str:
    line = _ship_line(report)
    if (report.get("weights") or {}).get("kind") == "seeded-random" and any(
            (r.get("drift_gate") or {}).get("passed") is None for r in report.get("results", [])):
        line += " (a drift gate was not applied: seeded-random weights; pass --checkpoint to judge drift)"
    return line


def _ship_line(report: dict) -> str:
    results = report.get("results", [])
    profile = report.get("profile") or {}
    name = profile.get("name", "the device profile")
    ok = [r for r in results if passes(r)]
    if not ok:
        return (f"Ship for {name}: none of the profiled variants passes both its drift gate and the budget; "
                "keep FP32 or relax the variant (see the checks below)")

    def speed(r):
        return _p50(r, "latency_e2e_ms") or _p50(r, "latency_ms") or math.inf

    fastest = min(ok, key=speed)
    base = baseline(report)
    gain = speed_text(fastest, base) if base is not None and fastest is not base else ""
    # "fastest" only where the gain over FP32 is measurable: noise does not pick a variant
    unmeasured = gain.startswith("no measurable difference") and base in ok
    on_host = profile.get("kind") == "gpu" and all((r.get("memory") or {}).get("kind") != "vram-nvml"
                                                    for r in results if not r.get("error"))
    if not on_host:
        if unmeasured:
            return (f"Ship for {name}: {base['variant']} — no variant that passes its drift gate and the budget is "
                    f"measurably faster here ({fastest['variant']}: {gain})")
        return (f"Ship for {name}: {fastest['variant']} — the fastest variant that passes its drift gate and the "
                f"budget{', ' + gain if gain else ''}")
    order = {p: i for i, p in enumerate(GPU_PREFERENCE)}
    pick = min(ok, key=lambda r: (order.get(r.get("precision"), len(order)), speed(r)))
    here = (f"none measurably faster than {base['variant']} ({fastest['variant']}: {gain})" if unmeasured
            else f"{fastest['variant']}{', ' + gain if gain else ''}")
    return (f"Ship for {name}: {pick['variant']} — passes its drift gate and fits the budget, and its precision "
            f"({pick.get('precision')}) is the GPU's fast path; its speed on the device is not measured on this CPU "
            f"host (confirm there with --backend ort-cuda). Fastest that passes on this machine: {here}")


def _eval_lines(report: dict) -> list[str]:
    better = {m["key"]: m["better"] for m in report.get("metrics", [])}
    out = []
    for r in report.get("results", []):
        if r.get("error"):
            out.append(f"{r['variant']} — FAILED: {r['error']}")
            continue
        deltas = [(k, d) for k, d in (r.get("delta") or {}).items() if _num(d) is not None and k in better]
        if not deltas:
            out.append(f"{r['variant']} ({r['backend']}) — the reference the others are compared with")
            continue
        worse = [k for k, d in deltas if (d < 0 if better[k] == "higher" else d > 0) and d != 0]
        text = ", ".join(f"{k} {d:+.3g} ({'↑' if better[k] == 'higher' else '↓'} better)" for k, d in deltas[:4])
        out.append(f"{r['variant']} ({r['backend']}) — vs FP32: {text}" + (f"; worse on {', '.join(worse)}" if worse
                                                                             else "; no metric worse"))
    return out


def verdict_lines(report: dict) -> list[str]:
    """The report's opening lines; for a profile the last one says what to ship."""
    kind = report.get("kind")
    if kind == "profile":
        base = baseline(report)
        gap = not_measured_line(report)
        return [variant_line(r, report, base) for r in report.get("results", [])] + ([gap] if gap else []) + \
            [ship_line(report)]
    if kind == "eval":
        return _eval_lines(report)
    if kind == "bench":
        return [str(v) for v in report.get("verdicts", [])]
    if kind == "fit":
        choice = (report.get("extra") or {}).get("choice")
        name = (report.get("profile") or {}).get("name", "the device profile")
        if isinstance(choice, dict) and choice.get("error"):
            return [f"Nothing fits {name}: {choice['error']}"]
        if isinstance(choice, dict) and choice:
            what = ", ".join(f"{k} {v}" for k, v in choice.items() if not isinstance(v, (dict, list)))
            return [f"Fits {name}: {what}"]
    if kind == "sweep":
        return [f"{f['model']} {f['shape']} on {f.get('device') or f['profile']}: "
                + (f"{f['variant']} ({f['backend']})" if f.get("variant") else "no variant meets its gate")
                + (f", {f['speedup_vs_fp32']:.2f}× FP32" if f.get("speedup_vs_fp32") else "")
                for f in report.get("fastest", [])]
    return []
