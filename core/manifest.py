"""manifest.json: what an export directory holds, versioned and validated on load.

Written last by every export (after all artifacts are in place) so a reader never sees
a manifest that names a missing or half-written file.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xopt.errors import UserError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
_REQUIRED_VARIANT_KEYS = ("name", "precision", "path", "sha256", "opset", "inputs", "outputs", "parity")


@dataclass
class Manifest:
    model: str
    weights: dict
    config: dict = field(default_factory=dict)
    covers: str = "whole model"
    variants: list[dict] = field(default_factory=list)
    versions: dict = field(default_factory=dict)
    machine: dict = field(default_factory=dict)
    created: str = ""
    directory: Path | None = None  # where it was loaded from; artifact paths are relative to it
    schema_version: int = SCHEMA_VERSION
    # variants asked for that did not pass their gate: {name, precision, stage, error, recipe, facts};
    # no artifact is written for them, and a re-export with the same recipe reports them again
    failed: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "schema_version": self.schema_version,
            "model": self.model,
            "weights": self.weights,
            "config": self.config,
            "covers": self.covers,
            "variants": self.variants,
            "versions": self.versions,
            "machine": self.machine,
            "created": self.created or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **({"failed": self.failed} if self.failed else {}),
        }

    def variant(self, name: str) -> dict:
        for v in self.variants:
            if v["name"] == name:
                return v
        from xopt.errors import UnknownChoiceError

        raise UnknownChoiceError(f"variant in {self.directory or 'manifest'}", name, [v["name"] for v in self.variants])

    def has(self, name: str) -> bool:
        return any(v["name"] == name for v in self.variants)

    def upsert(self, entry: dict) -> None:
        self.variants = [v for v in self.variants if v["name"] != entry["name"]] + [entry]
        self.failed = [f for f in self.failed if f["name"] != entry["name"]]

    def record_failure(self, record: dict) -> None:
        self.failed = [f for f in self.failed if f["name"] != record["name"]] + [record]

    def failure(self, name: str) -> dict | None:
        return next((f for f in self.failed if f["name"] == name), None)

    def path_of(self, name: str, key: str = "path") -> Path:
        rel = self.variant(name)[key]
        return (self.directory or Path(".")) / rel

    def save(self, directory: str | Path, force: bool = True) -> Path:
        from xopt.atomic import write_json

        directory = Path(directory)
        return write_json(directory / MANIFEST_NAME, self.to_json(), force=force)


def _bad(path, why: str) -> UserError:
    return UserError(f"{path} is not a valid xopt manifest ({why})", "re-run xopt export with --force to rebuild it")


def load(path: str | Path) -> Manifest:
    """Load a manifest from its file or its directory."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.exists():
        raise UserError(f"no manifest at {path}", "run xopt export first or pass the export directory")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(path, f"not JSON: {exc}") from exc
    return from_json(data, path)


def from_json(data: Any, path: str | Path = "manifest") -> Manifest:
    path = Path(path)
    if not isinstance(data, dict):
        raise _bad(path, "top level is not an object")
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise _bad(path, "schema_version missing")
    if version > SCHEMA_VERSION:
        raise UserError(f"{path} has schema_version {version}, newer than this xopt understands ({SCHEMA_VERSION})",
                        "upgrade xopt")
    for key in ("model", "weights", "variants"):
        if key not in data:
            raise _bad(path, f"'{key}' missing")
    if not isinstance(data["model"], str) or not isinstance(data["weights"], dict):
        raise _bad(path, "'model' must be a string and 'weights' an object")
    if not isinstance(data["variants"], list):
        raise _bad(path, "'variants' is not a list")
    for i, v in enumerate(data["variants"]):
        if not isinstance(v, dict):
            raise _bad(path, f"variant {i} is not an object")
        missing = [k for k in _REQUIRED_VARIANT_KEYS if k not in v]
        if missing:
            raise _bad(path, f"variant {v.get('name', i)} lacks {', '.join(missing)}")
        if not _inside(v["path"]):
            raise _bad(path, f"variant {v.get('name', i)} has a path outside its directory")
        _check_variant_types(v, i, path)
    for key in ("config", "versions", "machine"):
        if not isinstance(data.get(key, {}), dict):
            raise _bad(path, f"'{key}' is not an object")
    failed = data.get("failed", [])
    if not isinstance(failed, list) or not all(isinstance(f, dict) and isinstance(f.get("name"), str)
                                               and isinstance(f.get("error"), str) for f in failed):
        raise _bad(path, "'failed' must be a list of {name, error, ...} objects")
    return Manifest(
        model=data["model"], weights=data["weights"], config=data.get("config", {}),
        covers=data.get("covers", "whole model"), variants=data["variants"], versions=data.get("versions", {}),
        machine=data.get("machine", {}), created=data.get("created", ""),
        directory=path.parent, schema_version=version, failed=failed,
    )


def _inside(rel) -> bool:
    return isinstance(rel, str) and bool(rel) and not Path(rel).is_absolute() and ".." not in Path(rel).parts


def _named_list(value) -> bool:
    """The exporter's list of {name, dtype, shape}; a {name: shape} object is read too."""
    if isinstance(value, dict):
        return True
    return isinstance(value, list) and all(isinstance(x, dict) and isinstance(x.get("name"), str) for x in value)


def tensor_names(entry: dict, key: str = "inputs") -> list[str]:
    """Names of a variant's graph inputs (or outputs) as the manifest records them."""
    value = entry.get(key) or []
    return list(value) if isinstance(value, dict) else [t["name"] for t in value]


def _check_variant_types(v: dict, i: int, path: Path) -> None:
    """Types of the fields runtime.load and the exporter read, so a hand-edited manifest is one
    clear error rather than a TypeError deep in a backend."""
    name = v.get("name", i)
    if not all(isinstance(v[k], str) for k in ("name", "precision", "sha256")):
        raise _bad(path, f"variant {name}: name, precision and sha256 must be strings")
    if not (_named_list(v["inputs"]) and _named_list(v["outputs"])):
        raise _bad(path, f"variant {name}: inputs and outputs must be lists of named tensors")
    if not isinstance(v["parity"], dict) or not isinstance(v.get("ort_options", {}), dict) \
            or not isinstance(v.get("passes", []), list):
        raise _bad(path, f"variant {name}: parity and ort_options must be objects, passes a list")
    engines = v.get("engines", [])
    if not isinstance(engines, list) or not all(isinstance(e, dict) and _inside(e.get("path")) for e in engines):
        raise _bad(path, f"variant {name}: engines must be a list of files inside its directory")
    graphs = v.get("graphs", [])
    if not isinstance(graphs, list) or not all(isinstance(g, dict) and isinstance(g.get("name"), str)
                                               and _inside(g.get("path")) and isinstance(g.get("sha256"), str)
                                               for g in graphs):
        raise _bad(path, f"variant {name}: graphs must be a list of named files (with sha256) inside its directory")
