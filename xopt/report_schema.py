"""report.json: versioned, validated; Markdown and HTML are rendered from it only.

Shape (schema_version 1):
{
  "schema_version": 1, "kind": "profile" | "fit" | "bench",
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
      "memory": {"kind": "vram-nvml" | "host-rss", "peak_mb", "process_peak_mb"?, "device_peak_mb"?, "allocator_peak_mb"?},
      "budget": {"passed": bool, "checks": [{"name", "passed", "value", "limit", "unit"}]},
      "error": str | null   (a failed variant: NaN/Inf, does not fit, ...)
  } ],
  "extra": {...}  (model-specific sections, e.g. the fit curve)
}
"""
from __future__ import annotations

import json
from pathlib import Path

from xopt.errors import UserError

SCHEMA_VERSION = 1
KINDS = ("profile", "fit", "bench")
_RESULT_KEYS = ("variant", "precision", "backend", "drift", "latency_ms", "memory", "budget")


def _bad(path, why) -> UserError:
    return UserError(f"{path} is not a valid xopt report ({why})", "pass a report.json written by xopt profile")


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
    if not isinstance(data["results"], list):
        raise _bad(path, "'results' is not a list")
    if data["kind"] == "profile":
        for i, r in enumerate(data["results"]):
            if not isinstance(r, dict):
                raise _bad(path, f"result {i} is not an object")
            missing = [k for k in _RESULT_KEYS if k not in r]
            if missing:
                raise _bad(path, f"result {r.get('variant', i)} lacks {', '.join(missing)}")
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
