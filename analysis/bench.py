"""`xopt bench MODEL`: latency ratios measured in one run on one machine, drift beside them.

Torch eager FP32, ORT FP32 and each variant run the same inputs at the device profile's
target size, interleaved round-robin so a noisy neighbour slows every contender alike.
"""
from __future__ import annotations

import time

from xopt import progress
from xopt.runtime import load
from xopt.analysis.profiler import ensure_variants, run_targets
from xopt.analysis.verdicts import drift_verdict, gate_of
from xopt.noise import drift_between, floor_feeds, noise_floor
from xopt.report_schema import SCHEMA_VERSION
from xopt.stats import latency_summary

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
    sessions = {"torch fp32": load(manifest, backend="torch")}
    sessions.update({f"ort {v}": load(manifest, backend="ort-cpu", variant=v) for v in variants})
    outputs = {}
    with progress.step(f"{name}: warm-up and drift ({len(sessions)} contenders)"):
        for label, s in sessions.items():
            outputs[label] = [s.run(f) for f in feeds]
    times: dict[str, list[float]] = {k: [] for k in sessions}
    per_round = max(1, frames // ROUNDS)
    with progress.step(f"{name}: {frames} timed frames each, {ROUNDS} interleaved rounds"):
        for r in range(ROUNDS):
            for label, s in sessions.items():
                for i in range(per_round):
                    t0 = time.perf_counter()
                    s.run(feeds[(r + i) % len(feeds)])
                    times[label].append((time.perf_counter() - t0) * 1e3)
    refs = outputs["ort fp32"]
    floor = noise_floor(spec, sessions["ort fp32"].run, feeds, seed, refs)
    for s in sessions.values():
        s.close()
    stats = {k: latency_summary(v) for k, v in times.items()}
    tg = spec.bench
    key = tg.drift_key or gate_of(spec).key
    head = ["contender", "p50 ms", "p90 ms", "speed-up vs torch", "speed-up vs ORT FP32",
            f"drift {key}" if key else "drift", f"noise floor {key}" if key else "", "× noise floor"]
    rows, verdicts, results = [], [], {}
    torch_p50, fp32_p50 = stats["torch fp32"]["p50"], stats["ort fp32"]["p50"]
    for label, st in stats.items():
        drift = drift_between(spec, refs, outputs[label], feeds) if label != "ort fp32" else None
        d, nf = (drift or {}).get(key), floor.get(key)
        ratio_noise = (d / nf) if (d is not None and nf) else None
        results[label] = {"latency_ms": st, "drift": drift, "speedup_vs_torch": torch_p50 / st["p50"],
                          "speedup_vs_ort_fp32": fp32_p50 / st["p50"], "drift_vs_noise": ratio_noise}
        rows.append([label, f"{st['p50']:.2f}", f"{st['p90']:.2f}", f"{torch_p50 / st['p50']:.2f}×",
                     f"{fp32_p50 / st['p50']:.2f}×", "–" if d is None else f"{d:.4g}",
                     "–" if nf is None else f"{nf:.4g}", "–" if ratio_noise is None else f"{ratio_noise:.2f}×"])
    for v, record in not_built.items():
        rows.append([f"ort {v}", "–", "–", "–", "–", "not built", "", ""])
        results[f"ort {v}"] = {"error": f"not built: {record['error']}", "export_failure": record}
        verdicts.append(f"FAILED: {v} was not built: {record['error']}")
    for variant, need in tg.vs_torch.items():
        got = results.get(f"ort {variant}", {}).get("speedup_vs_torch")
        if got is not None:
            verdicts.append(f"{'MET' if got >= need else 'MISSED'}: ORT {variant} is {got:.2f}× torch eager FP32 "
                            f"(target ≥ {need}×)")
    for variant, need in tg.vs_fp32.items():
        res = results.get(f"ort {variant}")
        if res is None or res.get("error"):
            continue
        got = res["speedup_vs_ort_fp32"]
        verdicts.append(f"{'MET' if got >= need else 'MISSED'}: ORT {variant} is {got:.2f}× ORT FP32 (target ≥ {need}×)")
        gate = drift_verdict(spec, res["drift"], floor, manifest.weights, manifest.variant(variant))  # as profile
        res["drift_gate"] = gate
        state = {True: "MET", False: "MISSED", None: "NOT APPLIED"}[gate["passed"]]
        verdicts.append(f"{state}: {variant} drift gate: {gate['text']}")
    shape = {k: list(v.shape) for k, v in feeds[0].items()}
    weights = manifest.weights.get("kind")
    return {"schema_version": SCHEMA_VERSION, "kind": "bench", "model": name, "weights": manifest.weights,
            "machine": describe(), "profile": profile.to_json(), "command": command, "inputs": shape,
            "results": results, "noise_floor": floor, "verdicts": verdicts, "head": head, "rows": rows,
            "title": f"{name} bench on {describe()['cpu']} — inputs {shape} — weights: {weights}"}
