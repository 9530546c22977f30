"""One verdict per question, shared by `xopt profile`, `xopt bench` and the reports, so the
terminal, the Markdown and the HTML never disagree about the same row."""
from __future__ import annotations

import math
from typing import Any, Mapping

from xopt.gate import applies, bounds as gate_bounds, drop, loosest, within
from xopt.spec import DriftGate

NOT_MEASURED = "not measured here"


def gate_of(spec) -> DriftGate:
    if spec.gate is not None:
        return spec.gate
    return DriftGate(key=spec.drift_keys[0] if spec.drift_keys else "mae")


def export_gate(entry: Mapping[str, Any] | None) -> dict:
    """The gate a gated pass judged this variant by at export (its --max-drop and noise multiple),
    so the profile judges it the same way; {} for a variant without a gated pass."""
    for p in (entry or {}).get("passes", []):
        gate = (p.get("facts") or {}).get("gate")
        if gate:
            return gate
    return {}


def drift_verdict(spec, drift: Mapping[str, Any], floor: Mapping[str, Any], weights: Mapping[str, Any] | None = None,
                  entry: Mapping[str, Any] | None = None) -> dict:
    """Whether a variant's domain drift is within the spec's gate (see DriftGate), with the numbers.
    `weights` (the manifest's): on seeded-random weights a gate that fails is not applied
    (xopt.gate.applies: a chaotic network amplifies any rounding) and `passed` is None, while one
    that passes still says so (the error is small even amplified); non-finite outputs always
    fail. `entry` (the variant's manifest entry): the --max-drop its export was gated with
    applies here too."""
    verdict = _drift_verdict(spec, drift, floor, export_gate(entry))
    applied, why = applies(weights, export_gate(entry).get("max_drop"))
    if weights is None or applied or verdict["passed"] or verdict["text"].startswith(("NaN", "no finite")):
        return verdict
    return {**verdict, "passed": None, "would_pass": verdict["passed"], "applied": False,
            "text": f"gate not applied: {verdict['text']}; {why}"}


def _drift_verdict(spec, drift, floor, exported: Mapping[str, Any]) -> dict:
    gate = gate_of(spec)
    tensor = drift.get("tensor") or {}
    finite = all(d.get("finite", True) for d in tensor.values()) and drift.get("finite", True) is not False
    value, noise = drift.get(gate.key), (floor or {}).get(gate.key)
    out = {"key": gate.key, "value": value, "noise_floor": noise, "higher_is_better": gate.higher_is_better,
           "noise_multiple": gate.noise_multiple, "limit": gate.limit, "unit": gate.unit}
    if not finite:
        return {**out, "passed": False, "text": "NaN/Inf in the outputs"}
    if not bool(drift.get("passed", True)):
        return {**out, "passed": False, "text": "outside the spec's drift tolerance"}
    if value is None or not math.isfinite(float(value)):
        return {**out, "passed": False, "text": f"no finite {gate.key}"}
    value = float(value)
    max_drop = exported.get("max_drop")
    if max_drop is not None:  # the export's own gate, in the term's units
        ok = drop(gate, value) <= float(max_drop)
        return {**out, "passed": ok, "bound": max_drop, "bound_kind": "max_drop",
                "text": f"{gate.key} {value:.4g}{gate.unit} {'meets' if ok else 'misses'} a drop <= {max_drop:g}"
                        f"{gate.unit} (--max-drop at export)"}
    multiple = exported.get("noise_multiple") or gate.noise_multiple
    if multiple != gate.noise_multiple:
        from dataclasses import replace

        gate = replace(gate, noise_multiple=multiple)
    found = gate_bounds(gate, noise)
    if not found:
        return {**out, "passed": True, "text": f"{gate.key} {value:.4g} (no noise floor or limit to judge it)"}
    # the loosest bound decides: within k x noise OR meeting the absolute limit
    kind, bound = loosest(gate, found)
    ok = within(gate, value, bound)
    ratio = None
    if noise and not gate.db and float(noise) > 0:
        ratio = value / float(noise) if not gate.higher_is_better else float(noise) / max(value, 1e-300)
    sign = ">=" if gate.higher_is_better else "<="
    why = (f"{gate.noise_multiple:g}x the noise floor" if kind == "noise" else "the spec's limit")
    text = (f"{gate.key} {value:.4g}{gate.unit} {'meets' if ok else 'misses'} {sign} {bound:.4g}{gate.unit} ({why})"
            + (f"; {ratio:.2f}x the noise floor" if ratio is not None else ""))
    return {**out, "passed": ok, "bound": bound, "bound_kind": kind, "ratio_to_noise": ratio, "text": text}


def speed_verdict(lat: Mapping[str, Any] | None, base: Mapping[str, Any] | None) -> dict:
    """`lat` against `base` (latency summaries): the ratio base/lat, and whether the difference
    is measurable at all. It is not when their spreads (median ± one standard deviation)
    overlap: then the text says so instead of quoting a ratio that noise produced."""
    from xopt.stats import noisy, overlap

    a, b = (lat or {}).get("p50"), (base or {}).get("p50")
    if not a or not b:
        return {"measurable": False, "ratio": None, "busy": False, "text": "no timing"}
    ratio = float(b) / float(a)
    busy = noisy(lat, base)
    if overlap(lat, base):
        return {"measurable": False, "ratio": ratio, "busy": busy, "text": no_difference(busy)}
    return {"measurable": True, "ratio": ratio, "busy": busy, "text": times(ratio)}


def no_difference(busy: bool) -> str:
    return "no measurable difference" + (" on this busy machine" if busy else " (the timings' spreads overlap)")


def times(ratio: float) -> str:
    if abs(ratio - 1.0) < 0.005:
        return "the same speed (1.00×)"
    return f"{ratio:.2f}× faster" if ratio >= 1 else f"{1 / ratio:.2f}× slower"
