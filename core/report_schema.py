"""report.json: versioned, validated; Markdown and HTML are rendered from it only.

Shape (schema_version 2; version-1 reports still read):
{
  "schema_version": 2, "kind": "profile" | "fit" | "bench" | "eval" (shape: _check_eval) | "sweep" (_check_sweep),
  "model": str, "weights": {kind, seed?, path?, sha256?}, "config": {...},
  "created": iso time, "command": the xopt command line that produced it,
  "machine": xopt.machine.describe(), "profile": DeviceProfile.to_json(),
  "settings": {backend, frames, seed, ...},
  "results": [ {
      "variant", "precision", "backend", "artifact", "providers": [...],
      "drift": {<model terms>..., "tensor": {output: {max_abs, mean_abs, max_rel, cosine, finite}}},
      "noise_floor": {same keys as drift},
      "drift_ok": bool,
      "warmup_ms": {"load", "first_inference", "build"?, "cache_hit"?},
      "latency_ms": {"p50", "p90", "p95", "p99", "mean", "samples": [...]},
      "latency_e2e_ms": {same} | null,
      "fps": float, "fps_e2e": float | null, "throughput": {name: value} (e.g. real_time_factor),
      "memory": {"kind": "vram-nvml" | "host-rss", "peak_mb", "method": "nvml-process" | "nvml-device-delta" |
                 "host-rss" (which figure peak_mb is), "method_note"?, "process_peak_mb"?, "device_peak_mb"?,
                 "allocator_peak_mb"?},
      "session": {"backend", "path", "providers", "provider_options"?, ...}?  (Session.info()),
      "budget": {"passed": bool, "checks": [{"name", "passed", "value", "limit", "unit"}]},
      "error": str | null   (a failed variant: NaN/Inf, does not fit, ...),
      "memory.timeline": {"kind", "t_s": [...], "mb": [...], "marks": [[t_s, phase], ...]}?  (memory over time),
      "previews": [{"input", "group", "role", "kind", "title", "file": "previews/...", ...}]?  (xopt.previews),
      "previews_error": str?
  } ],
  "extra": {...}  (model-specific sections, e.g. the fit curve; sections with "head"/"rows" render as
                  tables, "drift_units" {term: unit} label the plots' axes; "layer_drift" [{"group", "nodes",
                  "drift", "drift_if_fp32"}] and "drift_vs_speed" [{"label", "speedup", "drift"}] (mixed
                  precision fallbacks) render as charts)
}
"""
from __future__ import annotations

import json
from pathlib import Path

from xopt.errors import UserError

# 2: settings record input shapes, threads and warm-up; results carry drift_gate and the worker's
#    process; a budget check may read passed=None with a status ("not measured here")
SCHEMA_VERSION = 2
KINDS = ("profile", "fit", "bench", "eval", "sweep")
_RESULT_KEYS = ("variant", "precision", "backend", "drift", "latency_ms", "memory", "budget")


def _bad(path, why) -> UserError:
    return UserError(f"{path} is not a valid xopt report ({why})", "pass a report.json written by xopt profile")


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _table_ok(head, rows) -> bool:
    return isinstance(head, list) and isinstance(rows, list) and all(isinstance(r, list) for r in rows)


def _check_result(r, i, path) -> None:
    """The fields the summaries and comparisons read, with their types: a hand-edited or
    truncated report is refused here in one line instead of failing in the renderer."""
    if not isinstance(r, dict):
        raise _bad(path, f"result {i} is not an object")
    missing = [k for k in _RESULT_KEYS if k not in r]
    if missing:
        raise _bad(path, f"result {r.get('variant', i)} lacks {', '.join(missing)}")
    where = f"result {i}"
    if not all(isinstance(r[k], str) for k in ("variant", "precision", "backend")):
        raise _bad(path, f"{where}: variant, precision and backend must be strings")
    if r.get("error") is not None:  # a failed variant: only its error is shown
        if not isinstance(r["error"], str):
            raise _bad(path, f"{where}: 'error' must be a string")
        return
    for key in ("drift", "latency_ms", "memory", "budget", "warmup_ms"):
        if not isinstance(r.get(key), dict):
            raise _bad(path, f"{where}: '{key}' must be an object")
    tensor = r["drift"].get("tensor", {})
    if not isinstance(tensor, dict) or not all(isinstance(t, dict) and _num(t.get("max_abs")) for t in tensor.values()):
        raise _bad(path, f"{where}: drift.tensor must map each output to its statistics")
    for key in ("noise_floor", "latency_e2e_ms", "device_latency_ms"):
        if not isinstance(r.get(key) or {}, dict):
            raise _bad(path, f"{where}: '{key}' must be an object or null")
    for key in ("latency_ms", "latency_e2e_ms"):
        if not isinstance((r.get(key) or {}).get("samples", []), list):
            raise _bad(path, f"{where}: {key}.samples must be a list")
    mem, budget = r["memory"], r["budget"]
    if not isinstance(mem.get("kind"), str) or "peak_mb" not in mem \
            or not (mem["peak_mb"] is None or _num(mem["peak_mb"])):
        raise _bad(path, f"{where}: memory needs a 'kind' string and a numeric 'peak_mb'")
    checks = budget.get("checks")
    named = isinstance(checks, list) and all(
        isinstance(c, dict) and isinstance(c.get("name"), str) and (isinstance(c.get("passed"), bool) or (
            c.get("passed") is None and isinstance(c.get("status"), str))) for c in checks)  # None: not measured here
    if not isinstance(budget.get("passed"), bool) or not named:
        raise _bad(path, f"{where}: budget needs 'passed' and a list of named checks")
    if not all(r.get(k) is None or _num(r[k]) for k in ("fps", "fps_e2e")):
        raise _bad(path, f"{where}: fps must be a number")
    previews = r.get("previews", [])
    if not isinstance(previews, list) or not all(isinstance(p, dict) and isinstance(p.get("file"), str)
                                                 and isinstance(p.get("kind"), str) for p in previews):
        raise _bad(path, f"{where}: previews must be a list of records with a 'file' and a 'kind'")


def _check_eval(data, path) -> None:
    """kind "eval" (xopt eval): "dataset" {layout, items, notes}, "metrics" [{key, better}], and per
    result "aggregate" {metric: number | null}, "delta" (vs FP32) and "items" [{name, metrics, checks}]."""
    d = data.get("dataset")
    if not isinstance(d, dict) or not isinstance(d.get("layout"), str) or not isinstance(d.get("items"), list):
        raise _bad(path, "an eval report needs 'dataset' with a 'layout' string and an 'items' list")
    metrics = data.get("metrics")
    if not isinstance(metrics, list) or not all(isinstance(m, dict) and isinstance(m.get("key"), str)
                                                and m.get("better") in ("higher", "lower") for m in metrics):
        raise _bad(path, "'metrics' must list {key, better: higher|lower}")
    if not _table_ok(data.get("head", []), data.get("rows", [])):
        raise _bad(path, "'head' and 'rows' must be lists")
    for i, r in enumerate(data["results"]):
        if not isinstance(r, dict) or not all(isinstance(r.get(k), str) for k in ("variant", "backend")):
            raise _bad(path, f"result {i} needs 'variant' and 'backend' strings")
        if r.get("error") is not None and not isinstance(r["error"], str):
            raise _bad(path, f"result {i}: 'error' must be a string")
        numbers = isinstance(r.get("aggregate"), dict) and all(v is None or _num(v) for v in r["aggregate"].values())
        if not numbers or not isinstance(r.get("delta") or {}, dict) or not isinstance(r.get("items"), list):
            raise _bad(path, f"result {r['variant']}: 'aggregate' must map metrics to numbers, 'items' be a list")
        for item in r["items"]:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str) \
                    or not isinstance(item.get("metrics"), dict) or not isinstance(item.get("checks", []), list):
                raise _bad(path, f"result {r['variant']}: each item needs a 'name', 'metrics' and a 'checks' list")


def _check_sweep(data, path) -> None:
    """kind "sweep" (xopt sweep): "points" [{model, variant, backend, status, ...}] plus the points
    table in "head"/"rows"; each point's full profile result stays in the sweep's results.json."""
    points = data.get("points")
    if not isinstance(points, list) or not all(isinstance(p, dict) and all(isinstance(p.get(k), str) for k in (
            "model", "variant", "backend", "status")) for p in points):
        raise _bad(path, "a sweep report needs 'points' with model, variant, backend and status strings")
    if not _table_ok(data.get("head", []), data.get("rows", [])):
        raise _bad(path, "'head' and 'rows' must be lists")


def validate(data, path="report.json") -> dict:
    if not isinstance(data, dict):
        raise _bad(path, "top level is not an object")
    v = data.get("schema_version")
    if not isinstance(v, int) or isinstance(v, bool):
        raise _bad(path, "schema_version missing")
    if v > SCHEMA_VERSION:
        raise UserError(f"{path} has schema_version {v}, newer than this xopt ({SCHEMA_VERSION})", "upgrade xopt")
    if data.get("kind") not in KINDS:
        raise _bad(path, f"kind must be one of {', '.join(KINDS)}")
    for key in ("model", "weights", "machine", "results"):
        if key not in data:
            raise _bad(path, f"'{key}' missing")
    if not isinstance(data["model"], str) or not isinstance(data["weights"], dict) \
            or not isinstance(data["machine"], dict):
        raise _bad(path, "'model' must be a string, 'weights' and 'machine' objects")
    machine = data["machine"]
    gpus = machine.get("gpus", [])
    if not isinstance(machine.get("cpu", ""), str) or not isinstance(machine.get("versions", {}), dict) \
            or not isinstance(gpus, list) or not all(isinstance(g, dict) and "name" in g for g in gpus):
        raise _bad(path, "machine needs a 'cpu' string, a 'versions' object and a list of named 'gpus'")
    if not all(isinstance(data.get(k, ""), str) for k in ("created", "command")):
        raise _bad(path, "'created' and 'command' must be strings")
    if not isinstance(data["results"], list) and not (data["kind"] == "bench" and isinstance(data["results"], dict)):
        raise _bad(path, "'results' is not a list")  # xopt bench keeps {contender: result}
    for key in ("profile", "settings", "extra"):
        if key in data and not isinstance(data[key], dict):
            raise _bad(path, f"'{key}' must be an object")
    keys = data.get("extra", {}).get("drift_keys", [])
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise _bad(path, "extra.drift_keys must be a list of strings")
    if data["kind"] == "profile":
        if not isinstance(data.get("profile"), dict) or not isinstance(data["profile"].get("name"), str) \
                or not isinstance(data.get("settings"), dict):
            raise _bad(path, "a profile report needs 'profile' (with its name) and 'settings'")
        for i, r in enumerate(data["results"]):
            _check_result(r, i, path)
    fit = data.get("extra", {}).get("fit")
    if data["kind"] == "fit" and fit is not None and not (isinstance(fit, dict) and _table_ok(fit.get("head"),
                                                                                             fit.get("rows"))):
        raise _bad(path, "extra.fit must hold a 'head' list and 'rows' lists")
    if data["kind"] == "bench" and not _table_ok(data.get("head", []), data.get("rows", [])):
        raise _bad(path, "'head' and 'rows' must be lists")
    if data["kind"] == "eval":
        _check_eval(data, path)
    if data["kind"] == "sweep":
        _check_sweep(data, path)
    return data


def load(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise UserError(f"no report at {path}", "run xopt profile first") from exc
    except IsADirectoryError as exc:
        raise UserError(f"{path} is a directory", "pass the report.json inside it") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(path, f"not JSON: {exc}") from exc
    return validate(data, path)


def public(report: dict) -> dict:
    """The report as it is written: a checkpoint named by its file name and sha256, not by where it
    lies on the machine that measured, and the command line with this folder and the home folder
    written as `.` and `~` (a report is shared; the manifest keeps the full path)."""
    from pathlib import Path, PurePath

    out = dict(report)
    weights = out.get("weights")
    if isinstance(weights, dict) and isinstance(weights.get("path"), str):
        out["weights"] = {**weights, "path": PurePath(weights["path"]).name}
    if isinstance(out.get("command"), str):
        out["command"] = _portable(out["command"], str(Path.cwd()), str(Path.home()))
    return out


def _portable(command: str, cwd: str, home: str) -> str:
    import re

    for root, name in sorted(((cwd, "."), (home, "~")), key=lambda r: -len(r[0])):
        if root not in ("", "/"):
            command = re.sub(re.escape(root.rstrip("/")) + r"(?=/|\s|$)", name, command)
    return command
