"""The small JSON written beside every engine (`model.engine.json`): what it was built
from, with which TensorRT, for which GPU. Read and compared before an engine is
deserialised, so a mismatch is a clear error that offers to rebuild instead of a
TensorRT crash or a `None` engine.

GPU fields: `compute_capabilities` (the engine's native ones), `hardware_compatibility`
("none" | "ampere+": TensorRT's AMPERE_PLUS level, any GPU from SM80 on), `sm` (its label:
"SM86", or "SM80+" for an ampere+ engine), `target_sm` (what the device profile asked for),
`built_on_sm` / `built_on_gpu` (full TensorRT: the GPU whose timings chose the kernels).
"""
from __future__ import annotations

import json
from pathlib import Path

from xopt.errors import UserError

FORMAT = "xopt-engine"
SCHEMA_VERSION = 1
REQUIRED = ("flavour", "trt_version", "compute_capabilities", "precision", "shapes", "engine_sha256")


def sidecar_path(engine: str | Path) -> Path:
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def write(engine: str | Path, meta: dict, force: bool = False) -> Path:
    from xopt.atomic import write_json

    return write_json(sidecar_path(engine), {"format": FORMAT, "schema_version": SCHEMA_VERSION, **meta}, force=force)


def rebuild_hint(meta: dict | None) -> str:
    if meta and isinstance(meta.get("rebuild"), str) and meta["rebuild"]:
        return f"rebuild it with: {meta['rebuild']}"
    return "rebuild it with: xopt export MODEL --engine trt|trt-rtx --force"


def read(engine: str | Path) -> dict:
    """The engine's metadata, or a UserError (missing, unreadable, not ours)."""
    engine = Path(engine)
    side = sidecar_path(engine)
    if not engine.exists():
        raise UserError(f"engine {engine} does not exist", rebuild_hint(None))
    if not side.exists():
        raise UserError(f"engine {engine} has no metadata file {side.name}, so xopt cannot tell which "
                        "TensorRT and GPU it was built for", rebuild_hint(None))
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"engine metadata {side} is unreadable ({exc})", rebuild_hint(None)) from exc
    version = meta.get("schema_version", 0) if isinstance(meta, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(version, int) \
            or isinstance(version, bool):
        raise UserError(f"{side} is not xopt engine metadata", rebuild_hint(None))
    if version > SCHEMA_VERSION:
        raise UserError(f"{side} was written by a newer xopt", "upgrade xopt or rebuild the engine")
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise UserError(f"{side} lacks {', '.join(missing)}", rebuild_hint(meta))
    malformed = [k for k, ok in _FIELD_CHECKS.items() if not ok(meta[k])]
    if malformed:  # hand-edited: the checks below would fail on it with a TypeError
        raise UserError(f"{side} has malformed {', '.join(malformed)}", rebuild_hint(meta))
    return meta


def _is_shapes(v) -> bool:
    return isinstance(v, dict) and all(
        isinstance(p, dict) and all(isinstance(p.get(k), list) and all(isinstance(d, int) for d in p[k])
                                    for k in ("min", "max")) for p in v.values())


_FIELD_CHECKS = {
    "flavour": lambda v: isinstance(v, str), "precision": lambda v: isinstance(v, str),
    "trt_version": lambda v: isinstance(v, (str, int, float)) and not isinstance(v, bool),
    "compute_capabilities": lambda v: isinstance(v, list) and bool(v), "shapes": _is_shapes,
    "engine_sha256": lambda v: isinstance(v, str),
}


def mismatches(meta: dict, installed_version: str | None, gpu_cc: str | None) -> list[str]:
    """Why this engine cannot run here (empty: it can). `gpu_cc` like '8.6'; None skips the GPU check."""
    why = []
    flavour = meta["flavour"]
    built = str(meta["trt_version"])
    if installed_version is None:
        why.append(f"it needs {meta.get('module', flavour)} {built}, which is not installed")
    elif installed_version != built:
        # TensorRT-RTX engines never cross releases; TensorRT ones only when built version-compatible,
        # and then only forwards within one major version.
        forward_ok = (flavour == "trt" and meta.get("version_compatible")
                      and installed_version.split(".")[0] == built.split(".")[0]
                      and _tuple(installed_version) >= _tuple(built))
        if not forward_ok:
            why.append(f"it was built with {flavour} {built} but {installed_version} is installed")
    if gpu_cc is not None:
        ccs = [str(c) for c in meta["compute_capabilities"]]
        if gpu_cc not in ccs and not _hardware_compatible(meta, gpu_cc):
            why.append(f"it was built for {runs_on(meta)} but this GPU is {gpu_cc}")
    return why


def check_loadable(engine: str | Path, meta: dict, installed_version: str | None, gpu_cc: str | None) -> None:
    why = mismatches(meta, installed_version, gpu_cc)
    if why:
        raise UserError(f"engine {Path(engine).name} cannot be loaded here: {'; '.join(why)}", rebuild_hint(meta))


def check_file(engine: str | Path, meta: dict) -> None:
    """The engine bytes are the ones the metadata describes (not replaced or truncated)."""
    from xopt.hashing import sha256_file

    if sha256_file(engine) != meta["engine_sha256"]:
        raise UserError(f"engine {Path(engine).name} does not match its metadata (sha256 differs): "
                        "it was replaced or is damaged", rebuild_hint(meta))


def runs_on(meta: dict) -> str:
    """'compute capability 8.6', or 'compute capability 8.0 and later (AMPERE_PLUS, built on ...)'."""
    ccs = ", ".join(str(c) for c in meta.get("compute_capabilities") or [])
    if meta.get("hardware_compatibility") != "ampere+":
        return f"compute capability {ccs}"
    on = " ".join(str(x) for x in (meta.get("built_on_gpu"), meta.get("built_on_sm")) if x) or ccs
    return f"compute capability 8.0 and later (AMPERE_PLUS, built on {on})"


def _hardware_compatible(meta: dict, gpu_cc: str) -> bool:
    # TensorRT's AMPERE_PLUS hardware-compatibility level runs on every GPU from SM80 up.
    return meta.get("hardware_compatibility") == "ampere+" and _tuple(gpu_cc) >= (8, 0)


def _tuple(version: str) -> tuple[int, ...]:
    out = []
    for part in str(version).split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)
