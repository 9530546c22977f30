"""TensorRT engines for exported variants, recorded in the manifest beside their ONNX."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from xopt import progress
from xopt.atomic import dir_lock

def engine_variants(spec, fp16: bool, int8: bool) -> list[str]:
    """Which variants get an engine for `--engine` with these precision flags."""
    out = (["fp16"] if fp16 else []) + ([spec.engine.int8_variant] if int8 else [])
    return out or ["fp32"]


def _ours(manifest, variant: str, backend: str) -> bool:
    """An engine file the manifest already records is an xopt artifact: rebuilding it from the
    cache is idempotent, not overwriting a user's file."""
    for rec in manifest.variant(variant).get("engines", []):
        if rec.get("backend") == backend and (Path(manifest.directory) / rec["path"]).exists():
            return True
    return False


def add_engines(spec, manifest, variants: Sequence[str], backend: str, profile, force: bool = False,
                options: dict | None = None):
    from xopt.optimize.engine import attach_engine, build_engine_variant

    shapes = spec.engine.shapes(profile.model_targets(spec.name)) if spec.engine.shapes else None
    with dir_lock(manifest.directory):
        for v in variants:
            with progress.step(f"{spec.name} {v}: {backend} engine for {profile.name}") as facts:
                rec = build_engine_variant(manifest, v, backend, profile=profile,
                                           force=force or _ours(manifest, v, backend), shapes=shapes, options=options)
                facts["note"] = "cache hit" if rec["cache_hit"] else f"built in {rec['engine']['build_ms'] / 1e3:.1f} s"
            attach_engine(manifest, v, rec)
        manifest.save(manifest.directory)
    return manifest
