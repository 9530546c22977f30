"""What an export folder holds and how a run changes it: artifact names, the manifest already
there (and whether it matches these weights and config), the variants still to build, the records
of variants that failed, and the commit that moves a run's artifacts into place with the manifest
last."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Mapping, Sequence

from xopt import progress
from xopt.atomic import atomic_path, dumps
from xopt.errors import GateFailed, OutputExistsError, UserError
from xopt.hashing import sha256_file
from xopt.manifest import MANIFEST_NAME, Manifest
from xopt.manifest import load as load_manifest
from xopt.optimize.base import get_pass
from xopt.spec import ModelSpec, Variant


def artifact_name(model: str, variant: str, graph: str | None = None) -> str:
    return f"{model}_{variant}.{graph}.onnx" if graph else f"{model}_{variant}.onnx"


def existing(out_dir: Path, spec: ModelSpec, weights_wanted: dict | None, config: dict, force: bool):
    if not (out_dir / MANIFEST_NAME).exists() or force:
        return None
    manifest = load_manifest(out_dir)
    if manifest.model != spec.name:
        raise UserError(f"{out_dir} holds a {manifest.model} export", "choose another --out or pass --force")
    mismatch = []
    if weights_wanted is not None and any(manifest.weights.get(k) != v for k, v in weights_wanted.items()):
        mismatch.append("weights")
    if manifest.config != config:
        mismatch.append("config")
    if mismatch:
        raise UserError(f"{out_dir} was exported with other {' and '.join(mismatch)} ({manifest.weights.get('kind')})",
                        "pass --force to rebuild every artifact or choose another --out")
    return manifest


def failure_record(variant: Variant, exc: UserError, recipe) -> dict:
    """The manifest's record of a variant that did not pass: its gate or parity numbers, kept so
    profile, bench and eval can show it as a row and a re-export with the same recipe says so."""
    stage = "gate" if isinstance(exc, GateFailed) else "parity"
    facts = exc.facts if isinstance(exc, GateFailed) else {"outputs": exc.diffs, "tolerance": exc.tolerance}
    return {"name": variant.name, "precision": variant.precision, "stage": stage, "error": exc.one_line(),
            "recipe": [{"name": n, "options": o} for n, o in recipe], "facts": facts,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def failed_in(manifest: Manifest | None, names: Sequence[str]) -> list[dict]:
    """The manifest's failure records of `names`, in that order."""
    if manifest is None:
        return []
    return [f for f in (manifest.failure(n) for n in names) if f is not None]


def commit(out_dir: Path, staged: list[tuple[Path, dict]], manifest: Manifest) -> None:
    """Move the staged artifacts into place and the manifest last.

    The manifest's bytes are written (and can fail for lack of space) before any artifact is
    moved, and the moves are renames within one file system, so a failure leaves the old
    state: artifacts that were new are taken back out, and no file sits in `out_dir` that the
    manifest does not describe.
    """
    placed = []
    try:
        with atomic_path(out_dir / MANIFEST_NAME, force=True) as tmp:
            tmp.write_text(dumps(manifest.to_json()), encoding="utf-8")
            for path, entry in staged:
                moves = [(path, entry["path"])] + [(path.parent / g["path"], g["path"]) for g in entry.get("graphs", [])]
                for src, rel in moves:
                    dest = out_dir / rel
                    existed = dest.exists()
                    os.replace(src, dest)
                    if not existed:
                        placed.append(dest)
    except BaseException:
        for dest in placed:
            dest.unlink(missing_ok=True)
        raise


def recipe(variant: Variant, pass_options: Mapping[str, Mapping]) -> list[tuple[str, dict]]:
    return [(name, get_pass(name).options.resolve({**opts, **pass_options.get(name, {})}))
            for name, opts in variant.passes]


def to_build(manifest: Manifest | None, wanted: list[Variant], out_dir: Path, pass_options, force: bool) -> list[Variant]:
    """Variants to build. One already in the manifest with the same recipe is up to date and kept;
    one with another recipe, or a foreign file in the way, needs --force."""
    if force or manifest is None:
        return list(wanted)
    todo = []
    for v in wanted:
        earlier = manifest.failure(v.name)
        if earlier is not None and not manifest.has(v.name) \
                and [(r["name"], r["options"]) for r in earlier.get("recipe", [])] == recipe(v, pass_options):
            progress.info(f"{manifest.model} {v.name}: failed with the same settings in an earlier export, kept as "
                          "that result (pass --force to build it again)")
            continue
        if not manifest.has(v.name):
            target = out_dir / artifact_name(manifest.model, v.name)
            if target.exists():
                raise OutputExistsError(target)
            todo.append(v)
            continue
        built_with = [(p["name"], p["options"]) for p in manifest.variant(v.name).get("passes", [])]
        if built_with != recipe(v, pass_options):
            raise UserError(f"{out_dir / artifact_name(manifest.model, v.name)} exists and was built with other "
                            "pass options", "pass --force to rebuild it or choose another --out")
        if v.name != "fp32":
            progress.info(f"{manifest.model} {v.name}: up to date in {out_dir}, kept")
    return todo


def weights_key(checkpoint, seed, source) -> dict | None:
    if source is not None:
        return {"kind": source.weights.get("kind"), "sha256": source.weights.get("sha256")}
    if checkpoint:
        return {"kind": "checkpoint", "sha256": sha256_file(checkpoint) if Path(checkpoint).is_file() else None}
    return {"kind": "seeded-random", "seed": seed}
