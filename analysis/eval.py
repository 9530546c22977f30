"""`xopt eval MODEL DATA`: the report of kind "eval" (versioned JSON; see core/report_schema.py).

Each variant runs through the model's embeddable pipeline on every item of the user's
dataset (what an app would ship), is scored against the references in the field's own
metrics, and is timed end to end on the same items, so the accuracy each optimisation costs
sits beside the speed it buys. `predictions=DIR` scores files another pipeline wrote instead.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from xopt import progress
from xopt.analysis import eval_runner as er
from xopt.errors import UserError


def _run_variants(spec, hooks, items, manifest, variants, backend) -> list[dict]:
    from xopt.runtime import load_pipeline
    from xopt.runtime.memory import MemoryMonitor, is_out_of_memory

    info = {"weights": manifest.weights}
    results = []
    for v in variants:
        record = manifest.failure(v) if not manifest.has(v) else None
        if record is not None:  # its export failed its gate: a row that says so, the others still run
            results.append(er.failed(v, record.get("precision", ""), backend, f"not built: {record['error']}"))
            continue
        precision = manifest.variant(v)["precision"]
        try:
            with MemoryMonitor(backend=backend) as mon:
                t0 = time.perf_counter()
                pipe = load_pipeline(manifest, backend=backend, variant=v)
                load_s = time.perf_counter() - t0
                try:
                    records, seconds = er.score_items(hooks, items, lambda item: hooks.predict(pipe, item), info,
                                                      f"{spec.name} {v}")
                finally:
                    pipe.close()
        except UserError as exc:
            if v == variants[0]:  # the FP32 reference cannot run it: a dataset problem (an unreadable file)
                raise
            # a variant that cannot take an input its reference took (a chunked bucket too small): its result
            results.append(er.failed(v, precision, backend, str(exc)))
            continue
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            results.append(er.failed(v, precision, backend, f"out of memory ({type(exc).__name__}): {exc}"[:300]))
            continue
        results.append(er.result_of(hooks, v, precision, backend, er.MODEL_SOURCE, records, seconds, load_s,
                                    mon.result))
    return results


def _score_predictions(spec, hooks, items, directory: Path, notes: list, skip_missing: bool) -> list[dict]:
    items = er.check_predictions(hooks, directory, items, skip_missing, notes)
    if not items:
        raise UserError("no item has a complete set of predictions", f"write predictions into {directory}")
    records, seconds = er.score_items(hooks, items, lambda item: hooks.read_prediction(directory, item),
                                      {"weights": {"kind": "unknown"}}, f"{spec.name} predictions")
    r = er.result_of(hooks, "predictions", "unknown", "none", er.PREDICTIONS_SOURCE, records, seconds, None, None)
    r["speed"] = None  # reading files is not the speed of whatever made them
    r["directory"] = str(directory)
    return [r]


def summary_table(report: dict) -> tuple[str, list[str], list[list[str]]]:
    """(title, head, rows): aggregate metrics, deltas against FP32, speed and warnings per result."""
    from xopt.analysis.eval_report import summary_rows

    head, rows = summary_rows(report)
    return f"{report['model']} against ground truth ({report['dataset']['layout']})", head, rows


def evaluate_model(name: str, data: str | Path | None, variants: Sequence[str] | None = None,
                   artifacts: str | Path | None = None, backend: str = "ort-cpu",
                   predictions: str | Path | None = None, options: Mapping[str, Any] | None = None,
                   limit: int | None = None, profile_name: str | None = None, seed: int = 0,
                   command: str | None = None) -> dict:
    from xopt.machine import describe
    from xopt.registry import get_model
    from xopt.report_schema import SCHEMA_VERSION

    spec = get_model(name)
    hooks = er.hooks_of(spec)
    options = dict(options or {})
    with progress.step(f"{name}: reading the dataset"):
        dataset = er.read_items(spec, data, options, limit)
    notes = list(dataset.notes)
    manifest = None
    if predictions is not None:
        if variants:
            raise UserError("--predictions scores saved outputs; --variants runs the model",
                            "pass one of --predictions DIR or --variants")
        results = _score_predictions(spec, hooks, dataset.items, Path(predictions), notes,
                                     bool(options.get("skip_missing")))
        weights = {"kind": "none", "note": f"scored the predictions in {predictions}; no model was run"}
        config: dict = {}
        covers = "saved predictions"
    else:
        manifest, chosen = _prepare(spec, variants, artifacts, backend, profile_name)
        results = _run_variants(spec, hooks, dataset.items, manifest, chosen, backend)
        weights, config, covers = manifest.weights, manifest.config, manifest.covers
    results = er.with_deltas(results, hooks.metrics)
    report = {
        "schema_version": SCHEMA_VERSION, "kind": "eval", "model": name, "weights": weights, "config": config,
        "covers": covers, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command or f"xopt eval {name} {data or ''}".strip(), "machine": describe(),
        "settings": {"backend": backend if predictions is None else "none", "data": str(data) if data else None,
                     "predictions": str(predictions) if predictions is not None else None,
                     "artifacts": str(manifest.directory) if manifest is not None else None, "seed": seed,
                     "limit": limit, "options": {k: v for k, v in options.items() if v not in (None, False)}},
        "dataset": {"layout": dataset.layout, "items": [i.name for i in dataset.items], "notes": notes,
                    "method": dataset.method},
        "metrics": [{"key": k, "better": b} for k, b in hooks.metrics.items()],
        "results": results,
        "extra": {},
    }
    report = er.json_safe(report)
    report["title"], report["head"], report["rows"] = summary_table(report)
    return report


def _prepare(spec, variants, artifacts, backend, profile_name):
    from xopt.analysis.profiler import ensure_variants
    from xopt.export.pipeline import default_out_dir
    from xopt.manifest import MANIFEST_NAME
    from xopt.manifest import load as load_manifest
    from xopt.profiles import get_profile
    from xopt.runtime.backends.base import get_backend

    get_backend(backend)
    for v in variants or ():
        spec.variant(v)
    art = Path(artifacts) if artifacts else default_out_dir(spec.name)
    existing = load_manifest(art) if (art / MANIFEST_NAME).is_file() else None
    if existing is not None and existing.model != spec.name:
        raise UserError(f"{art} holds a {existing.model} export, not {spec.name}", f"pass --artifacts of a {spec.name} export")
    chosen = er.choose_variants(variants, existing)
    if backend == "torch" and chosen != ["fp32"]:
        raise UserError("the torch backend runs the FP32 PyTorch model only", "use --variants fp32 with --backend torch")
    manifest = ensure_variants(spec.name, chosen, art, get_profile(profile_name))
    return manifest, chosen
