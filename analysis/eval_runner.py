"""`xopt eval`: each variant (or a folder of someone else's predictions) against ground truth,
in the model's own metrics, with label-free checks and the speed each variant ran at.

Model knowledge comes only through the spec's `EvalHooks` (xopt.spec): the layouts it reads,
how it predicts and scores one item, its dataset aggregate and its checks.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from xopt import progress
from xopt.errors import UserError

MODEL_SOURCE = "model"
PREDICTIONS_SOURCE = "predictions"


def hooks_of(spec):
    if spec.evaluation is None:
        raise UserError(f"model {spec.name} has no evaluation against ground truth",
                        "see xopt list for the models xopt eval supports")
    return spec.evaluation


def read_items(spec, data, options: Mapping[str, Any], limit: int | None):
    dataset = hooks_of(spec).dataset(Path(data) if data else None, dict(options))
    items = list(dataset.items)
    if not items:
        raise UserError(f"the dataset at {data} has no complete items to score", "check its layout (xopt eval --help)")
    if limit is not None:
        if limit < 1:
            raise UserError(f"--limit {limit} is not positive", "pass --limit 1 or more")
        if limit < len(items):
            dataset.notes.append(f"--limit {limit}: scored the first {limit} of {len(items)} items (by name)")
            items = items[:limit]
    dataset.items = items
    return dataset


def check_predictions(hooks, directory: Path, items: list, skip_missing: bool, notes: list) -> list:
    """Every file `--predictions` lacks, named at once (or, with --skip-missing, noted and dropped)."""
    if hooks.prediction_paths is None or hooks.read_prediction is None:
        raise UserError("this model cannot score saved predictions", "run the model instead (drop --predictions)")
    if not directory.is_dir():
        raise UserError(f"--predictions {directory} is not a directory", "pass the folder holding the predictions")
    missing = {}
    for item in items:
        absent = [p for p in hooks.prediction_paths(directory, item) if not Path(p).exists()]
        if absent:
            missing[item.name] = absent
    if not missing:
        return items
    shown = "; ".join(f"{name}: {', '.join(str(p) for p in paths[:3])}" + (" ..." if len(paths) > 3 else "")
                      for name, paths in list(missing.items())[:5])
    more = f" (and {len(missing) - 5} more items)" if len(missing) > 5 else ""
    text = f"{len(missing)} of {len(items)} items have no prediction: {shown}{more}"
    if not skip_missing:
        raise UserError(text, "write the missing predictions, or pass --skip-missing to score the others")
    notes.append(f"skipped {text}")
    return [i for i in items if i.name not in missing]


def _summary(values: Sequence[float]) -> dict:
    a = np.asarray(values, np.float64)
    return {"mean": float(a.mean()), "p50": float(np.median(a)), "max": float(a.max()), "total": float(a.sum())}


def _numbers(score: Mapping[str, Any]) -> dict:
    return {k: float(v) for k, v in score.items()
            if isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool)}


def json_safe(v):
    """NaN/Inf are not JSON: a metric that is undefined (a silent stem) is written as null."""
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    if isinstance(v, np.floating):
        v = float(v)
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def score_items(hooks, items: list, produce, info: Mapping[str, Any], label: str) -> tuple[list, list]:
    """(per-item records, seconds per item): `produce(item)` gives the output to score."""
    records, seconds = [], []
    for item in progress.track(items, label, len(items), "items"):
        t0 = time.perf_counter()
        output = produce(item)
        seconds.append(time.perf_counter() - t0)
        score = dict(hooks.score(item, output))
        notes = list(score.pop("notes", []) or [])
        parts = score.pop("parts", None)
        checks = list(hooks.item_checks(item, output, info)) if hooks.item_checks is not None else []
        del output  # one item's output in memory at a time (a track's stems, a video's mattes)
        records.append({"name": item.name, "metrics": json_safe(_numbers(score)),
                        **({"parts": json_safe(parts)} if parts else {}), "notes": notes, "checks": checks,
                        "seconds": round(seconds[-1], 4),
                        **({"duration_s": item.meta["duration_s"]} if "duration_s" in item.meta else {})})
    return records, seconds


def _warnings(records: list) -> list[dict]:
    """Failed checks grouped by name: how many items, and the first item's message."""
    grouped: dict[str, dict] = {}
    for r in records:
        for c in r["checks"]:
            if not c.get("ok", True):
                g = grouped.setdefault(c["name"], {"check": c["name"], "items": [], "message": c.get("message", "")})
                g["items"].append(r["name"])
    return list(grouped.values())


def result_of(hooks, variant: str, precision: str, backend: str, source: str, records: list, seconds: list,
              load_s: float | None, memory: dict | None) -> dict:
    scores = [{**r["metrics"], **{k: float("nan") for k, v in r["metrics"].items() if v is None}} for r in records]
    aggregate = json_safe(_numbers(hooks.aggregate(scores)))
    media = sum(r.get("duration_s", 0.0) for r in records)
    speed = {"seconds_per_item": _summary(seconds), "items_per_s": len(seconds) / max(sum(seconds), 1e-9),
             "load_s": load_s}
    if media:
        speed["real_time_factor"] = media / max(sum(seconds), 1e-9)
    return {"variant": variant, "precision": precision, "backend": backend, "source": source, "error": None,
            "aggregate": aggregate, "delta": None, "items": records, "warnings": _warnings(records),
            "speed": speed, "memory": memory}


def with_deltas(results: list, metrics: Mapping[str, str]) -> list:
    """Each variant's aggregate minus FP32's, per metric (the first result is the baseline)."""
    base = next((r for r in results if r["variant"] == "fp32" and not r.get("error")), None)
    for r in results:
        if base is None or r is base or r.get("error"):
            continue
        r["delta"] = {k: (r["aggregate"][k] - base["aggregate"][k])
                      if r["aggregate"].get(k) is not None and base["aggregate"].get(k) is not None else None
                      for k in metrics if k in r["aggregate"]}
    return results


def failed(variant: str, precision: str, backend: str, error: str) -> dict:
    return {"variant": variant, "precision": precision, "backend": backend, "source": MODEL_SOURCE, "error": error,
            "aggregate": {}, "delta": None, "items": [], "warnings": [], "speed": None, "memory": None}


def choose_variants(requested: Sequence[str] | None, manifest) -> list[str]:
    """The requested variants with FP32 first (every delta is against it); by default every
    variant the export holds, or FP32 alone."""
    if requested:
        chosen = list(dict.fromkeys(requested))
    elif manifest is not None:
        chosen = [v["name"] for v in manifest.variants]
    else:
        chosen = ["fp32"]
    if "fp32" not in chosen:
        progress.info("adding fp32: every variant's accuracy cost is measured against it")
    return ["fp32"] + [v for v in chosen if v != "fp32"]


def run_warnings(spec, src: Path, written: Sequence[Path], weights: Mapping[str, Any] | None) -> list[str]:
    """One line per label-free check that failed on what `xopt run` read and wrote."""
    hooks = spec.evaluation
    if hooks is None or hooks.run_checks is None or not written:
        return []
    try:
        found = hooks.run_checks(Path(src), [Path(p) for p in written], {"weights": dict(weights or {})})
    except UserError as exc:  # the outputs are written; say why they could not be checked
        return [f"the outputs could not be checked ({exc})"]
    return [f"{c['name']}: {c['message']}" for c in found if not c.get("ok", True)]
