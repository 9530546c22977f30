"""`xopt bench MODEL`: latency ratios measured in one run on one machine, drift beside them.

Torch eager FP32, ORT FP32 and each variant run the same inputs at the device profile's
target size, interleaved round-robin so a noisy neighbour slows every contender alike.
"""
from __future__ import annotations

import time

from xopt import progress
from xopt.runtime import load
from xopt.analysis.profiler import ensure_variants, run_targets
from xopt.analysis.verdicts import drift_verdict, gate_of, no_difference, speed_verdict
from xopt.noise import drift_between, floor_feeds, noise_floor
from xopt.report_schema import SCHEMA_VERSION
from xopt.stats import figure, latency_summary, noisy, timing_ms

ROUNDS = 5


def bench_model(name: str, variants, artifacts=None, frames: int = 20, profile_name=None, seed: int = 0,
                command: str = "") -> dict:
    from xopt.machine import describe
    from xopt.profiles import get_profile
    from xopt.registry import get_model

    spec = get_model(name)
    variants = list(dict.fromkeys(["fp32"] + list(variants)))
    profile = get_profile(profile_name)
    manifest = ensure_variants(name, variants, artifacts, profile)
    not_built = {v: manifest.failure(v) for v in variants if not manifest.has(v) and manifest.failure(v)}
    variants = [v for v in variants if v not in not_built]
    feeds = floor_feeds(spec, run_targets(profile, manifest), seed)  # the noise floor's inputs, as profile's
    with progress.step(f"{name}: load torch eager FP32 and ORT {', '.join(variants)}"):
        sessions = {"torch fp32": load(manifest, backend="torch")}
        sessions.update({f"ort {v}": load(manifest, backend="ort-cpu", variant=v) for v in variants})
    outputs = {}
    with progress.counted(f"{name}: warm-up and drift ({len(sessions)} contenders)", len(sessions),
                          "contenders") as c:
        for label, s in sessions.items():
            outputs[label] = [s.run(f) for f in feeds]
            c.advance()
    times: dict[str, list[float]] = {k: [] for k in sessions}
    per_round = max(1, frames // ROUNDS)
    with progress.counted(f"{name}: {per_round * ROUNDS} timed frames each, {ROUNDS} interleaved rounds",
                          ROUNDS * per_round * len(sessions), "frames") as c:
        for r in range(ROUNDS):
            for label, s in sessions.items():
                for i in range(per_round):
                    t0 = time.perf_counter()
                    s.run(feeds[(r + i) % len(feeds)])
                    times[label].append((time.perf_counter() - t0) * 1e3)
                    c.advance()
    refs = outputs["ort fp32"]
    with progress.step(f"{name}: noise floor of ORT FP32 (inputs moved by ±1 quantum)"):
        floor = noise_floor(spec, sessions["ort fp32"].run, feeds, seed, refs)
    for s in sessions.values():
        s.close()
    stats = {k: latency_summary(v) for k, v in times.items()}
    tg = spec.bench
    key = tg.drift_key or gate_of(spec).key
    head = ["contender", "p50 ms", "p90 ms", "CV", "vs torch", "vs ORT FP32",
            f"drift {key}" if key else "drift", f"noise floor {key}" if key else "", "vs noise floor"]
    db = gate_of(spec).db and key == gate_of(spec).key  # a dB term (SDR): how far below the floor, not a ratio
    rows, verdicts, results = [], [], {}
    torch_p50, fp32_p50 = stats["torch fp32"]["p50"], stats["ort fp32"]["p50"]
    for label, st in stats.items():
        drift = drift_between(spec, refs, outputs[label], feeds) if label != "ort fp32" else None
        d, nf = (drift or {}).get(key), floor.get(key)
        ratio_noise = (d / nf) if (d is not None and nf and not db) else None
        vs_torch, vs_fp32 = speed_verdict(st, stats["torch fp32"]), speed_verdict(st, stats["ort fp32"])
        results[label] = {"latency_ms": st, "drift": drift, "speedup_vs_torch": torch_p50 / st["p50"],
                          "speedup_vs_ort_fp32": fp32_p50 / st["p50"], "drift_vs_noise": ratio_noise,
                          "measurable_vs_torch": vs_torch["measurable"],
                          "measurable_vs_ort_fp32": vs_fp32["measurable"]}
        rows.append([label, _cell(st, "p50"), _cell(st, "p90"), f"{st['cv']:.0%}",
                     _ratio(vs_torch, label == "torch fp32"), _ratio(vs_fp32, label == "ort fp32"),
                     "–" if d is None else figure(d), "–" if nf is None else figure(nf),
                     _vs_floor(d, nf, ratio_noise, db)])
    for v, record in not_built.items():
        rows.append([f"ort {v}", "–", "–", "–", "–", "–", "not built", "", ""])
        results[f"ort {v}"] = {"error": f"not built: {record['error']}", "export_failure": record}
        verdicts.append(f"FAILED: {v} was not built: {record['error']}")
    for variant, need in tg.vs_torch.items():
        res = results.get(f"ort {variant}")
        if res is not None:
            verdicts.append(_target(f"ORT {variant}", "torch eager FP32", res["speedup_vs_torch"], need,
                                    res["measurable_vs_torch"], stats[f"ort {variant}"], stats["torch fp32"]))
    for variant, need in tg.vs_fp32.items():
        res = results.get(f"ort {variant}")
        if res is None or res.get("error"):
            continue
        verdicts.append(_target(f"ORT {variant}", "ORT FP32", res["speedup_vs_ort_fp32"], need,
                                res["measurable_vs_ort_fp32"], stats[f"ort {variant}"], stats["ort fp32"]))
        gate = drift_verdict(spec, res["drift"], floor, manifest.weights, manifest.variant(variant))  # as profile
        res["drift_gate"] = gate
        state = {True: "MET", False: "MISSED", None: "NOT APPLIED"}[gate["passed"]]
        verdicts.append(f"{state}: {variant} drift gate: {gate['text']}")
    shape = {k: list(v.shape) for k, v in feeds[0].items()}
    weights = manifest.weights.get("kind")
    return {"schema_version": SCHEMA_VERSION, "kind": "bench", "model": name, "weights": manifest.weights,
            "machine": describe(), "profile": profile.to_json(), "command": command, "inputs": shape,
            "results": results, "noise_floor": floor, "verdicts": verdicts, "head": head, "rows": rows,
            "title": f"{name} bench on {describe()['cpu']} — inputs "
                     + ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in shape.items()) + f" — weights: {weights}"}


def _cell(st: dict, key: str) -> str:
    text = timing_ms(st, key)
    return text[:-3] if text.endswith(" ms") else text


def _ratio(v: dict, itself: bool) -> str:
    """A speed-up cell: the ratio, or "within noise" where the spreads overlap."""
    if itself:
        return "1×"
    return f"{v['ratio']:.2f}×" if v["measurable"] else "within noise"


def _target(what: str, against: str, got: float, need: float, measurable: bool, st: dict, base: dict) -> str:
    """MET / MISSED for a speed target, or UNDECIDED where the two timings' spreads overlap."""
    if not measurable:
        return (f"UNDECIDED: {what} vs {against}: {no_difference(noisy(st, base))} (p50 {timing_ms(st)} vs "
                f"{timing_ms(base)}, CV {st['cv']:.0%} and {base['cv']:.0%}); target ≥ {need}×, re-run on an idle "
                "machine")
    return f"{'MET' if got >= need else 'MISSED'}: {what} is {got:.2f}× {against} (target ≥ {need}×)"


def _vs_floor(d, nf, ratio, db: bool) -> str:
    """Drift against the noise floor: a multiple of it, or for a dB term (higher is better) how
    many dB below it the variant lies."""
    if db and d is not None and nf is not None:
        return f"{nf - d:.1f} dB below" if d < nf else f"{d - nf:.1f} dB above"
    return "–" if ratio is None else f"{ratio:.2f}×"
