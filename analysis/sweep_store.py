"""results.json of a sweep: every finished point, written the moment it finishes.

Points are keyed by what was measured: (artifact sha256, backend, shape, device profile) and
the measurement settings (frames, warm-up, threads, seed, e2e). The file is replaced atomically
after each point, so an interrupted sweep (Ctrl-C, a killed driver) leaves the points finished
so far, and a re-run measures only what is missing. Recipes remember the sha256 their export
produced, so a re-run whose points are all there exports nothing either.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from xopt.errors import UserError

RESULTS_NAME = "results.json"
KIND = "xopt-sweep-results"
VERSION = 1


def point_key(sha256: str, backend: str, shape: dict, profile: str, settings: dict) -> str:
    ident = {"sha256": sha256, "backend": backend, "shape": shape, "device": profile, "settings": settings}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]


class Store:
    """The results file of one sweep directory. One writer: the driver holds the directory lock."""

    def __init__(self, out_dir: str | Path, force: bool = False):
        self.dir = Path(out_dir)
        self.path = self.dir / RESULTS_NAME
        self.data = {"kind": KIND, "schema_version": VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                     "points": {}, "recipes": {}, "runs": []}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                if not force:
                    raise UserError(f"{self.path} is not a sweep results file ({exc})",
                                    "pass --force to start it afresh, or choose another --out") from exc
                data = None
            if data is not None and (not isinstance(data, dict) or data.get("kind") != KIND):
                if not force:
                    raise UserError(f"{self.path} was not written by xopt sweep",
                                    "pass --force to replace it, or choose another --out")
                data = None
            if data is not None and data.get("schema_version", 0) > VERSION:
                raise UserError(f"{self.path} is from a newer xopt (schema {data['schema_version']})", "upgrade xopt")
            if data is not None:
                self.data = data

    # -- reading ----------------------------------------------------------------------------
    def get(self, key: str) -> dict | None:
        return self.data["points"].get(key)

    def done(self, key: str) -> bool:
        """Measured (a result, a "does not fit" result included); failed points are tried again."""
        rec = self.get(key)
        return rec is not None and rec.get("status") != "failed"

    def recipe_shas(self, recipe_key: str) -> dict[str, str]:
        return dict((self.data["recipes"].get(recipe_key) or {}).get("sha256") or {})

    def points(self) -> list[dict]:
        return list(self.data["points"].values())

    # -- writing (each call leaves a complete file) -------------------------------------------
    def _save(self) -> None:
        from xopt.atomic import write_json

        self.data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        write_json(self.path, self.data, force=True)

    def put_recipe(self, recipe_key: str, info: dict) -> None:
        self.data["recipes"][recipe_key] = info
        self._save()

    def put(self, record: dict) -> None:
        old = self.get(record["key"])
        if old and old.get("status") == "failed" and record.get("status") == "failed":
            record["attempts"] = old.get("attempts", 1) + record.get("attempts", 1)
        self.data["points"][record["key"]] = record
        self._save()

    def start_run(self, info: dict) -> None:
        self.data["runs"].append(info)
        self._save()

    def end_run(self, **facts) -> None:
        if self.data["runs"]:
            self.data["runs"][-1].update(facts)
        self._save()
