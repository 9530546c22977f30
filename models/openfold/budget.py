"""Fit OpenFold to a device budget: per host-loop setting (chunk sizes, storage precision) the
peak memory of the ONNX path, measured phase by phase at real width, and the longest chain
that fits.

What is measured (hostmeasure.py, a fresh numpy + ONNX Runtime process per point): one
Evoformer block at N residues and S MSA rows, the structure module + pTM head at N, and (at the
longest N) one extra-MSA block. Blocks run one after another, so the whole model's peak is
    weights of every block (parameter count x bytes, exact) + the largest measured phase.
Small N are measured for every setting and fitted (non-negative least squares on 1, N, N^2,
kN, kN^2 with k = min(attention chunk, N); k = N unchunked, the triangle attention's N^3);
the profile's `fit_points` (e.g. 1024, 2048, 2500) are then measured for every setting whose
fitted peak fits this host's free memory, with sampled compute (hostmeasure.Sampled: only the
graph calls that can raise the peak run; memory exact to SAMPLE_MARGIN_MB, time projected):
a real-width block costs ~40 CPU minutes at N = 2,500, so a fit's long points would take hours
in full. The report keeps measured points and extrapolated limits apart and labels each. On a CPU host the figures are host peaks: the host loop keeps
m and z in host memory, so a GPU execution provider's device memory per call (a chunk's
working set) stays below them.

Time: process CPU seconds of one measured block, x blocks x iterations, on this host.
Each point is cached (xopt's cache directory, keyed by request, machine and versions), so a
second `xopt fit` or `xopt export --chunk auto` reuses it.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from xopt.errors import BudgetError
from xopt.fitting import largest_within, measure_in_fresh_process, nnls, parse_chunk

# fastest first: `choose` takes the first that fits
# `measure_to`: the longest N a setting is measured at on a CPU host (beyond it, extrapolated).
# Unchunked triangle attention holds [N, H, N, N] logits (17 GB at N = 1,024): it stops at 512.
SETTINGS = (
    {"name": "unchunked", "chunk_size": None, "attn_chunk_size": None, "storage": "fp32", "measure_to": 512},
    {"name": "c128-a16", "chunk_size": 128, "attn_chunk_size": 16, "storage": "fp32", "measure_to": 2500},
    {"name": "c64-a4", "chunk_size": 64, "attn_chunk_size": 4, "storage": "fp32", "measure_to": 2500},
    {"name": "c64-a2-fp16store", "chunk_size": 64, "attn_chunk_size": 2, "storage": "fp16", "measure_to": 2500},
)
SMALL_POINTS = {"tiny": (32, 64, 128), "default": (64, 128, 256)}
MAX_SEARCH = 16384
SAMPLE_MARGIN_MB = 16
_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
POINT_VERSION = 2  # 2: channels-first triangle projections (graphs v3)


def variant_name(precision: str, chunk: int | None) -> str:
    return f"{precision}-" + (f"chunk{chunk}" if chunk else "unchunked")


def variant_settings(precision: str, chunk: int | None) -> dict:
    """Settings of the PyTorch eager trunk (torch backend, bench.py): OpenFold's in-place
    triangle multiplication stepped 8*chunk rows at a time (its default of 256 rows saves
    nothing up to 256 residues)."""
    return {"precision": precision, "chunk_size": chunk, "tri_mul_chunk": min(256, 8 * chunk) if chunk else None}


def _run_point(req: dict, timeout: float = 900.0) -> dict:
    return measure_in_fresh_process("xopt.models.openfold.measure:point", req, timeout=timeout,
                                    what=f"openfold measurement ({req.get('settings')}, N={req.get('n')})",
                                    fix="check the openfold install (models/openfold/install.py) and free memory")


def _point_key(req: Mapping[str, Any]) -> str:
    from xopt.machine import describe

    m = describe()
    # the graphs' directory name is the hash of the network config (hostmeasure.graph_dir)
    facts = {"req": {k: v for k, v in req.items() if k not in ("graph_dir", "config")},
             "graphs": Path(req["graph_dir"]).name, "v": POINT_VERSION,
             "cpu": m.get("cpu"), "versions": {k: (m.get("versions") or {}).get(k) for k in ("onnxruntime", "numpy")}}
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _point_path(req: dict) -> Path:
    from xopt.cache import cache_root

    return cache_root() / "openfold-measure" / "points" / f"{_point_key(req)}.json"


def measure_phase(info: dict, cfg: Mapping, setting: Mapping, phase: str, n: int, s: int, threads: int = 2,
                  cached_only: bool = False, sample: bool = False) -> dict | None:
    """One phase at N in a fresh process, or its cached result (None: not cached and `cached_only`).
    `sample`: run only the graph calls that can raise the peak (hostmeasure.Sampled; memory exact
    to SAMPLE_MARGIN_MB, time projected); a cached full run of the same point is preferred."""
    st = {k: setting.get(k) for k in ("chunk_size", "attn_chunk_size", "storage")} | {"precision": "fp32"}
    req = {"graph_dir": info["dir"], "config": dict(cfg), "phase": phase, "settings": st, "n": int(n), "s": int(s),
           "threads": threads}
    candidates = [req] + ([{**req, "sample_margin_mb": SAMPLE_MARGIN_MB}] if sample else [])
    for r in candidates:
        if _point_path(r).is_file():
            return {**json.loads(_point_path(r).read_text()), "cached": True}
    if cached_only:
        return None
    req = candidates[-1]
    path = _point_path(req)
    r = measure_in_fresh_process("xopt.models.openfold.hostmeasure:point", req, timeout=4 * 3600,
                                 what=f"openfold {phase} measurement ({setting['name']}, N={n})",
                                 fix="free memory, or pass a smaller N (profile fit_points)")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(r))
    return r


def _basis(n, chunk, kind: str) -> np.ndarray:
    n = np.asarray(n, np.float64)
    if kind == "time":
        return np.stack([np.ones_like(n), n, n ** 2, n ** 3], axis=-1)
    k = n if chunk is None else np.minimum(float(chunk), n)
    return np.stack([np.ones_like(n), n, n ** 2, k * n, k * n ** 2], axis=-1)


def fit_curve(ns, ys, chunk, kind: str) -> list[float]:
    """Non-negative least-squares coefficients of `_basis`."""
    coef, _ = nnls(list(_basis(ns, chunk, kind).T), ys)
    return [float(c) for c in coef]


def eval_curve(coef, n, chunk, kind: str) -> float:
    return float(_basis([float(n)], chunk, kind)[0] @ np.asarray(coef))


def _free_host_mb() -> float:
    import psutil

    return psutil.virtual_memory().available / 2**20


def fit_variants(cfg: Mapping[str, Any], budget_mb: float, settings=SETTINGS, small=None, large=(),
                 msa_rows: int | None = None, extra_rows: int | None = None, residues=(), progress=None,
                 large_cached_only: bool = False) -> dict:
    """Measure every setting at the small points, extrapolate, then measure the large points that
    this host can hold (with `large_cached_only`, only those an earlier fit measured). Returns the
    fits, the curve (measured and extrapolated points) and facts."""
    preset = cfg.get("preset", "default")
    small = tuple(small or SMALL_POINTS.get(preset, SMALL_POINTS["default"]))
    s = int(msa_rows or cfg.get("msa_depth", 512))
    s_extra = int(extra_rows or min(int(cfg.get("extra_msa_depth", 1024)), 1024))
    params = _run_point({"what": "parameters", "config": dict(cfg)})
    info = measure_in_fresh_process("xopt.models.openfold.hostmeasure:export", {"config": dict(cfg),
                                    "settings": {"precision": "fp32"}}, timeout=3600, what="openfold graph export")
    blocks, iters = params["blocks"], int(cfg.get("recycles", 3)) + 1
    weights_mb = params["total"] * _BYTES["fp32"] / 2**20
    fits, curve, skipped = {}, [], []
    for st in settings:
        name, k = st["name"], st.get("attn_chunk_size")
        measured = []
        for n in small:
            if progress:
                progress(f"{name}: N={n}")
            r = measure_phase(info, cfg, st, "evo", n, s)
            measured.append({"n": n, "phases": {"evo": r["peak_mb"]}, "block_cpu_s": r["cpu_seconds"]})
        ns = [p["n"] for p in measured]
        mem_c = fit_curve(ns, [p["phases"]["evo"] for p in measured], k, "memory")
        for n in large:
            guess = eval_curve(mem_c, n, k, "memory")
            if n > st.get("measure_to", MAX_SEARCH):
                skipped.append({"variant": name, "n": n, "predicted_mb": round(guess), "why": "beyond measure_to"})
                continue
            if guess > 0.8 * _free_host_mb():
                skipped.append({"variant": name, "n": n, "predicted_mb": round(guess), "why": "more than this host holds"})
                continue
            if progress:
                progress(f"{name}: N={n} (real width, measured)")
            phases = {"evo": measure_phase(info, cfg, st, "evo", n, s, cached_only=large_cached_only, sample=True)}
            if phases["evo"] is None:
                skipped.append({"variant": name, "n": n, "predicted_mb": round(guess), "why": "not measured yet"})
                continue
            phases["structure"] = measure_phase(info, cfg, st, "structure", n, s, cached_only=large_cached_only,
                                                sample=True)
            if n == min(max(large), st.get("measure_to", MAX_SEARCH)) and \
                    weights_mb + phases["evo"]["peak_mb"] <= budget_mb:
                phases["extra"] = measure_phase(info, cfg, st, "extra", n, s_extra, cached_only=large_cached_only,
                                                sample=True)
            phases = {p: r for p, r in phases.items() if r is not None}
            measured.append({"n": n, "phases": {p: r["peak_mb"] for p, r in phases.items()},
                             "block_cpu_s": phases["evo"]["cpu_seconds"],
                             "compute": {p: r.get("compute", "full") for p, r in phases.items()},
                             "time": phases["evo"].get("time", "measured")})
            # the next long point is predicted from every point so far, the long ones included
            mem_c = fit_curve([p["n"] for p in measured], [p["phases"]["evo"] for p in measured], k, "memory")
        ns = [p["n"] for p in measured]
        mem_c = fit_curve(ns, [max(p["phases"].values()) for p in measured], k, "memory")
        t_c = fit_curve(ns, [p["block_cpu_s"] for p in measured], None, "time")
        predict = lambda n, c=mem_c, kk=k: weights_mb + eval_curve(c, n, kk, "memory")  # noqa: E731
        for p in measured:
            p["whole_mb"] = round(weights_mb + max(p["phases"].values()), 1)
            p["fits"] = p["whole_mb"] <= budget_mb
            curve.append({"variant": name, "n": p["n"], "peak_mb": p["whole_mb"], "phases": p["phases"],
                          "seconds": round(p["block_cpu_s"] * blocks * iters, 2), "measured": True,
                          "time": p.get("time", "measured")})
        n_max = largest_within(predict, budget_mb, MAX_SEARCH)
        for n in sorted({int(x) for x in residues} | {n_max} - {0} - set(ns)):
            curve.append({"variant": name, "n": n, "peak_mb": round(predict(n), 1),
                          "seconds": round(eval_curve(t_c, n, None, "time") * blocks * iters, 1), "measured": False})
        fit_ok = [p["n"] for p in measured if p["fits"]]
        fits[name] = {**st, "precision": "fp32", "weights_mb": round(weights_mb, 1), "memory_coef": mem_c,
                      "time_coef": t_c, "measured": measured, "max_measured_fitting": max(fit_ok, default=0),
                      "max_measured": max(ns), "max_residues_extrapolated": n_max, "blocks": blocks,
                      "iterations": iters}
    return {"fits": fits, "curve": curve, "skipped": skipped, "parameters": params, "msa_rows": s,
            "extra_msa_rows": s_extra, "small_points": list(small), "large_points": list(large),
            "blocks": blocks, "iterations": iters,
            "basis": "host peak of the ONNX path on this CPU (measured points; larger N extrapolated)",
            "long_points": f"memory measured with sampled compute (graph calls that cannot raise the peak return "
                           f"zero-filled outputs; exact to {SAMPLE_MARGIN_MB} MB), block time projected from the "
                           "calls run"}


def fits_residues(f: Mapping, residues: int) -> tuple[bool, str]:
    """Whether a fit holds `residues`: by a measured point at or beyond it, else by extrapolation."""
    beyond = [p for p in f.get("measured", []) if p["n"] >= residues]
    if beyond:
        p = min(beyond, key=lambda q: q["n"])
        return bool(p["fits"]), f"measured at N={p['n']}: {p['whole_mb']:.0f} MB"
    return f.get("max_residues_extrapolated", 0) >= residues, f"extrapolated: up to {f.get('max_residues_extrapolated')}"


def choose(fits: Mapping[str, dict], residues: int) -> dict:
    """The first setting (fastest first) measured to hold `residues`, else the first extrapolated
    to; BudgetError if none does."""
    ok = [(name, f) for name, f in fits.items() if "error" not in f]
    for measured_only in (True, False):
        for name, f in ok:
            good, why = fits_residues(f, residues)
            if good and (why.startswith("measured") or not measured_only):
                return {"variant": name, "chunk_size": f["chunk_size"], "attn_chunk_size": f["attn_chunk_size"],
                        "storage": f["storage"], "residues": residues, "basis": why}
    best = max(ok, key=lambda nf: max(nf[1].get("max_measured_fitting", 0), nf[1].get("max_residues_extrapolated", 0)),
               default=None)
    hint = f"; the most is with {best[0]}" if best else ""
    raise BudgetError(f"a {residues}-residue chain", f"no measured setting fits{hint}: use a bigger device profile "
                      "or shorter chains")


def fit_report(spec, profile, config: Mapping[str, Any], options: Mapping[str, Any]) -> dict:
    """spec.fit: report dict of kind "fit" (report_schema) with the curve under extra.curve."""
    from xopt import progress
    from xopt.machine import describe
    from xopt.models.openfold import _cfg
    from xopt.report_schema import SCHEMA_VERSION

    cfg = _cfg(config)
    targets = profile.model_targets("openfold")
    residues = [int(r) for r in options.get("residues", targets.get("residues", [128, 256]))]
    large = [int(r) for r in options.get("fit_points", targets.get("fit_points", []))]
    settings = options.get("settings", SETTINGS)
    with progress.bar(f"openfold: fit {len(settings)} host-loop settings to {profile.name} ({profile.budget_mb:.0f} MB "
                      f"budget; real-width points {', '.join(map(str, large)) or 'none'})") as update:
        count = {"done": 0}

        def tick(what):
            count["done"] += 1
            update({"what": what, "done": count["done"], "total": None})
        res = fit_variants(cfg, profile.budget_mb, settings, options.get("points"), large, options.get("msa_rows"),
                           options.get("extra_msa_rows"), residues, progress=tick)
    # the setting's name says its chunk, attention chunk and storage (the notes spell them out):
    # six columns stay readable at 80 columns
    head = ["setting"] + [f"MB N={n}" for n in large] + ["measured N in budget", "max N extrapolated"]
    rows, results = [], []
    for name, f in res["fits"].items():
        by_n = {p["n"]: p for p in f["measured"]}
        cells = [f"{by_n[n]['whole_mb']:.0f}{'' if by_n[n]['fits'] else ' (over)'}" if n in by_n else "not run"
                 for n in large]
        rows.append([name, *cells, f["max_measured_fitting"] or "-", f["max_residues_extrapolated"]])
        results.append({"variant": name, **{k: f[k] for k in ("chunk_size", "attn_chunk_size", "storage", "precision",
                                                               "weights_mb", "max_measured_fitting", "max_measured",
                                                               "max_residues_extrapolated")},
                        "measured": f["measured"], "basis": res["basis"]})
    try:
        choice = choose(res["fits"], max(residues))
        verdict = (f"{max(residues)} residues in {profile.budget_mb:.0f} MB: {choice['variant']} "
                   f"(chunk {choice['chunk_size']}, attention chunk {choice['attn_chunk_size']}, {choice['storage']} "
                   f"storage; {choice['basis']})")
    except BudgetError as exc:
        choice = {"error": str(exc)}
        verdict = f"{max(residues)} residues in {profile.budget_mb:.0f} MB: no setting ({exc})"
    names = "; ".join(f"{name}: chunk {f['chunk_size'] or 'none'}, attention chunk {f['attn_chunk_size'] or 'none'}, "
                      f"{f['storage']} storage" for name, f in res["fits"].items())
    notes = [f"Settings: {names}.",
             f"MB: whole-model host peak = weights of every block + the largest phase; N <= "
             f"{max(res['small_points'])} measured in full, longer N {res['long_points']}.", verdict]
    return {
        "schema_version": SCHEMA_VERSION, "kind": "fit", "model": "openfold",
        "weights": {"kind": "seeded-random", "seed": 0, "note": "memory does not depend on weight values"},
        "config": dict(config), "covers": spec.covers, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": options.get("command", "xopt fit openfold"), "machine": describe(), "profile": profile.to_json(),
        "settings": {"basis": res["basis"], "long_points": res["long_points"], "msa_rows": res["msa_rows"],
                     "extra_msa_rows": res["extra_msa_rows"],
                     "small_points": res["small_points"], "large_points": res["large_points"],
                     "blocks": res["blocks"], "iterations": res["iterations"],
                     "memory_model": "weights (all blocks) + the largest phase (one Evoformer block, one extra-MSA "
                                     "block, structure module); small-N fit on 1, N, N^2, kN, kN^2"},
        "results": results,
        "extra": {"curve": res["curve"], "choice": choice, "parameters": res["parameters"], "fits": res["fits"],
                  "skipped": res["skipped"], "fit": {"head": head, "rows": rows, "notes": notes},
                  "how measured": {"markdown": "\n\n".join(notes)}},
    }


def chunk_options(value, profile, config_name=None, options: Mapping[str, Any] | None = None) -> dict:
    """`xopt export --chunk VALUE`: config overrides. A number sets the chunk size (attention rows
    a sixteenth of it); `auto` takes the first setting that holds the profile's longest target,
    from an earlier `xopt fit` report (options["fit_report"]) or a new fit."""
    from xopt.models.openfold import _cfg

    value = parse_chunk(value, ("auto", "none", "off", "0"), int, "64")
    if value in ("none", "off", "0"):
        return {"chunk_size": None, "attn_chunk_size": None}
    if value != "auto":
        return {"chunk_size": value, "attn_chunk_size": max(1, value // 16)}
    cfg = _cfg({"preset": config_name or "default"})
    targets = profile.model_targets("openfold")
    want = max(int(r) for r in targets.get("residues", [256]))
    fits = _cached_fits((options or {}).get("fit_report"), profile, cfg)
    if fits is None:
        from xopt import progress

        # the long points take hours on a CPU: reuse those `xopt fit` measured, extrapolate the rest
        with progress.step(f"openfold: --chunk auto fits {len(SETTINGS)} settings to {profile.name} "
                           "(small N measured now, long points from earlier `xopt fit` runs)") as facts:
            fits = fit_variants(cfg, profile.budget_mb, SETTINGS, None, [int(r) for r in targets.get("fit_points", [])],
                                residues=[want], large_cached_only=True)["fits"]
            facts["note"] = f"measured up to N={max(f['max_measured'] for f in fits.values())}"
    choice = choose(fits, want)
    return {"chunk_size": choice["chunk_size"], "attn_chunk_size": choice["attn_chunk_size"],
            "storage": choice["storage"], "chunk_choice": choice}


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
