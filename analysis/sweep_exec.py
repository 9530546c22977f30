"""What one sweep task does, wherever it runs (this process, or a Ray worker on any node):
export a recipe once, or measure one point with the profiler (each variant in a process of
its own), and describe the node and device it ran on."""
from __future__ import annotations

import tempfile
import time
import traceback
from pathlib import Path

from xopt.analysis.sweep_file import Point, Recipe
from xopt.analysis.sweep_store import point_key
from xopt.errors import UserError

CPU_BACKENDS = ("ort-cpu", "torch")  # every other backend is timed on a GPU, one point per GPU


def adopt(registered: dict) -> None:
    """Register what the driver registered by hand (a test model, a plug-in), and keep it
    recorded as such, so the profiler's own measurement processes register it again too."""
    from xopt.analysis.isolate import replay
    from xopt.optimize.base import PASSES
    from xopt.registry import MODELS
    from xopt.runtime.backends.base import BACKENDS

    replay(registered)
    for key, reg in (("passes", PASSES), ("backends", BACKENDS), ("models", MODELS)):
        reg.origins.update(registered.get(key) or {})


def needs_gpu(backend: str) -> bool:
    return backend not in CPU_BACKENDS


def export_dir(recipe: Recipe) -> Path:
    """The recipe's export on this node: the job's own artifacts directory, else the cache."""
    from xopt.cache import cache_root

    return Path(recipe.artifacts) if recipe.artifacts else cache_root() / "sweep-exports" / f"{recipe.model}-{recipe.key}"


def export_recipe(recipe: Recipe, variants: list[str]) -> dict:
    """Export (or find already exported: exports are idempotent per recipe) `variants`."""
    from xopt.export.pipeline import export_model
    from xopt.runtime.ray_env import current_node

    t0 = time.perf_counter()
    out = export_dir(recipe)
    manifest = export_model(recipe.model, variants, out_dir=out, checkpoint=recipe.checkpoint, config=recipe.config,
                            config_overrides=dict(recipe.config_overrides) or None, seed=recipe.seed)
    return {"dir": str(out), "sha256": {v["name"]: v["sha256"] for v in manifest.variants},
            "failed": {f["name"]: f["error"] for f in manifest.failed if not manifest.has(f["name"])},
            "weights": manifest.weights, "node": current_node(), "wall_s": round(time.perf_counter() - t0, 2)}


def not_built(point: Point, info: dict) -> dict | None:
    """The record of a point whose variant its export could not build (it failed its gate)."""
    error = (info.get("failed") or {}).get(point.variant)
    return ident_record(point, f"not built: {error}") if error and point.variant not in info["sha256"] else None


def key_of(point: Point, shas: dict[str, str]) -> str | None:
    sha = shas.get(point.variant)
    return sha and point_key(sha, point.backend, point.shape_dict(), point.profile, point.settings_dict())


def device_of(backend: str, node: dict) -> str:
    """The device a point was timed on: the GPU Ray gave it, else this host's CPU."""
    from xopt.machine import describe, gpus

    if needs_gpu(backend):
        found = gpus()
        ids = [int(g) for g in node.get("gpu_ids") or [] if str(g).isdigit()]
        chosen = [g for g in found if g["index"] in ids] or found[:1]
        if chosen:
            return f"GPU: {chosen[0]['name']}"
        return "GPU: none visible"
    m = describe()
    return f"CPU: {m['cpu']} ({m['cpu_count']} logical cores)"


def reproduce_command(point: Point, artifacts: str) -> str:
    from xopt.registry import get_model

    s = point.settings_dict()
    flag = {f.target: f.flag for f in get_model(point.model).shape_flags}
    shape = " ".join(f"--{flag.get(k, k)} {v[0] if isinstance(v, list) else v}" for k, v in point.shape_dict().items())
    return " ".join(x for x in [
        f"xopt profile {point.model} --variants {point.variant} --backend {point.backend} --profile {point.profile}",
        f"--frames {s['frames']} --warmup {s['warmup']} --seed {s['seed']}",
        f"--threads {s['threads']}" if s.get("threads") else "", "" if s["e2e"] else "--no-e2e", shape,
        f"--artifacts {artifacts}"] if x)


def _status(result: dict) -> str:
    if result.get("error") is None:
        return "ok"
    return "does-not-fit" if (result.get("memory") or {}).get("kind") == "out-of-memory" else "variant-failed"


def base_record(point: Point, key: str | None, sha: str | None) -> dict:
    return {"key": key, "model": point.model, "variant": point.variant, "backend": point.backend,
            "profile": point.profile, "shape": point.shape_dict(), "shape_text": point.shape_text(),
            "settings": point.settings_dict(), "recipe": point.recipe.key, "recipe_label": point.recipe.label(),
            "job": point.job, "sha256": sha}


def failed_record(point: Point, key: str | None, sha: str | None, error: str, node: dict | None = None,
                  attempts: int = 1) -> dict:
    return {**base_record(point, key, sha), "status": "failed", "error": error, "node": node or {},
            "device": None, "attempts": attempts, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def ident_key(point: Point) -> str:
    """The key of a point whose artifact does not exist (its export failed): what was asked."""
    return point_key(f"recipe:{point.recipe.key}:{point.variant}", point.backend, point.shape_dict(), point.profile,
                     point.settings_dict())


def ident_record(point: Point, error: str) -> dict:
    return failed_record(point, ident_key(point), None, error)


def run_point(point: Point, artifacts: str, sha: str) -> dict:
    """Measure one point; a failure (a missing provider, a broken artifact, a bug) is the
    record's error, never an exception, so one point cannot stop the others."""
    from xopt.analysis.profiler import profile_model
    from xopt.runtime.ray_env import current_node

    key = key_of(point, {point.variant: sha})
    node = current_node()
    s = point.settings_dict()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="xopt-sweep-point-") as tmp:
        log = Path(tmp) / "point.log"
        try:
            report = profile_model(point.model, [point.variant], artifacts=artifacts, backend=point.backend,
                                   frames=s["frames"], profile_name=point.profile, seed=s["seed"], e2e=s["e2e"],
                                   warmup=s["warmup"], threads=s.get("threads"), targets_override=point.shape_dict(),
                                   command=reproduce_command(point, artifacts), log=log)
        except Exception as exc:  # noqa: BLE001 - recorded with its type; the sweep goes on
            tail = log.read_text(encoding="utf-8", errors="replace")[-2000:] if log.exists() else ""
            why = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
            rec = failed_record(point, key, sha, why.strip()[:4000], node)
            rec["log_tail"] = tail or traceback.format_exc()[-2000:]
            rec["wall_s"] = round(time.perf_counter() - t0, 2)
            return rec
    result = report["results"][0]
    settings = {k: v for k, v in report["settings"].items() if k not in ("log", "artifacts")}
    return {**base_record(point, key, sha), "status": _status(result), "error": result.get("error"),
            "node": node, "device": device_of(point.backend, node), "wall_s": round(time.perf_counter() - t0, 2),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "result": result, "measured": settings,
            "weights": report["weights"], "config": report["config"], "machine": report["machine"],
            "command": report["command"], "extra": report.get("extra", {})}

