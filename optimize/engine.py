"""The `engine` pass: ONNX -> serialized TensorRT / TensorRT-RTX engine for a device profile.

Shapes come from `ctx.engine_shapes` (contract in optimize/_trt_shapes.py) or the
`shapes` option; the workspace is capped from the profile's VRAM budget; the target
compute capability is the profile's (rtx3060-laptop-12gb -> SM86). Engines are cached
(optimize/_trt_cache.py) and always built in a child process (optimize/_trt_build.py):
a TensorRT crash becomes a UserError. Full TensorRT needs a GPU to build (NVML is asked
first); TensorRT-RTX builds ahead of time on a machine without one.
"""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path

from xopt.errors import UserError
from xopt.optimize import _trt_graph, _trt_shapes
from xopt.optimize._trt_cache import EngineCache, cache_key, default_root
from xopt.optimize._trt_config import PRECISIONS, BuildRequest, plan, resolve_precision, target_facts
from xopt.optimize.base import Option, OptionSet, Pass, PassContext, register_pass
from xopt.runtime import engine_meta, trt_env

BACKENDS = ("trt", "trt-rtx")
WORKSPACE_SHARE = 0.25  # of the profile's budget; activations and I/O need the rest
WORKSPACE_MAX_MB = 4096
WORKSPACE_NO_PROFILE_MB = 1024
_DESCRIPTIVE = ("model", "onnx", "rebuild", "profile", "notes")  # facts of this call, not of the cache key


def default_workspace_mb(profile) -> int:
    budget = getattr(profile, "budget_mb", None) if profile is not None else None
    if not budget or getattr(profile, "kind", "gpu") != "gpu":
        return WORKSPACE_NO_PROFILE_MB
    return int(max(256, min(WORKSPACE_MAX_MB, budget * WORKSPACE_SHARE)))


class EnginePass(Pass):
    name = "engine"
    description = "build a TensorRT or TensorRT-RTX engine for the device profile (cached by graph and target)"
    output_suffix = ".engine"
    options = OptionSet([
        Option("backend", "str", "trt-rtx", "engine builder: trt (TensorRT, needs the GPU) or trt-rtx "
               "(TensorRT-RTX, builds ahead of time without one)", BACKENDS, cli=False),
        Option("precision", "str", "auto", "engine precision; auto = the ONNX graph's (strongly typed builders "
               "always take the graph's)", PRECISIONS, cli=False),
        Option("workspace_mb", "int", 0, f"builder workspace cap in MiB (0: {WORKSPACE_SHARE:.0%} of the profile's "
               f"VRAM budget, at most {WORKSPACE_MAX_MB})"),
        Option("compute_capability", "str", "", "target GPU compute capability, e.g. 8.6 (default: the profile's)"),
        Option("shapes", "str", "", "optimisation profile name:min,opt,max;... (default: from the model spec)"),
        Option("timing_cache", "str", "", "TensorRT timing cache file reused across builds (default: in the cache dir)"),
        Option("calibration_cache", "str", "", "INT8 calibration cache for a graph without Q/DQ (TensorRT 10 only)"),
        Option("optimization_level", "int", -1, "builder optimisation level 0-5 (-1: TensorRT's default)"),
        Option("cache", "bool", True, "reuse an engine built earlier for the same graph and target"),
        Option("build_timeout_s", "int", 3600, "give up on a build after this many seconds"),
    ])

    def apply(self, src: Path, dst: Path, opts: dict, ctx: PassContext) -> dict:
        t_start = time.perf_counter()
        opts = self.options.resolve(opts)
        src, dst = Path(src), Path(dst)
        fl, version = trt_env.require_flavour(opts["backend"])
        facts = _trt_graph.read(src)
        precision = resolve_precision(opts["precision"], facts)
        given = _trt_shapes.parse_text(opts["shapes"]) if opts["shapes"] else ctx.engine_shapes
        shapes = _trt_shapes.normalise(given, facts.inputs)
        target, local = _targets(fl.name, opts["compute_capability"], ctx.profile)
        root = default_root(ctx.cache_dir)
        workspace = opts["workspace_mb"] or default_workspace_mb(ctx.profile)
        calib = Path(opts["calibration_cache"]).expanduser() if opts["calibration_cache"] else None
        if calib is not None and not calib.is_file():
            raise UserError(f"calibration cache {calib} does not exist", "pass the path of a TensorRT calibration cache")
        gpu_name = (trt_env.first_gpu() or {}).get("name") if fl.name == "trt" else None
        timing = _timing_cache_path(opts["timing_cache"], root, fl.name, version, target, local, gpu_name)
        req = BuildRequest(
            onnx=str(src), engine="", flavour=fl.name, precision=precision, shapes=shapes, workspace_mb=int(workspace),
            compute_capability=target, local_compute_capability=local, timing_cache=str(timing) if timing else None,
            calibration_cache=str(calib) if calib else None,
            optimization_level=None if opts["optimization_level"] < 0 else opts["optimization_level"])
        build_plan = plan(req, version, facts)
        from xopt.hashing import sha256_file

        meta = {
            "model": ctx.model, "module": fl.module, "flavour": fl.name, "trt_version": version,
            **target_facts(req, build_plan, gpu_name), "precision": precision,
            "strongly_typed": build_plan.strongly_typed, "builder_flags": build_plan.flags, "shapes": shapes,
            "workspace_mb": int(workspace), "onnx": src.name, "onnx_sha256": sha256_file(src),
            "calibration_cache_sha256": sha256_file(calib) if calib else None,
            "optimization_level": req.optimization_level,
            "timing_cache": str(timing) if build_plan.use_timing_cache else None,
            "notes": build_plan.notes, "rebuild": _rebuild_command(ctx, fl.name, precision),
            "profile": getattr(ctx.profile, "name", None),
        }
        key = cache_key(meta)
        cache = EngineCache(root)
        with cache.locked():
            cached = cache.lookup(key) if opts["cache"] else None
            if cached is None:
                built = _build(cache, key, req, build_plan, opts["build_timeout_s"], meta)
                cached = cache.lookup(key) if opts["cache"] else built
                if cached is None:  # pragma: no cover - only if the cache dir is changed under the lock
                    raise UserError(f"the engine cache {root} lost the entry just written", "check the cache directory")
                hit = False
            else:
                hit = True
            # The cached entry may come from another export of the same graph: describe this one.
            cached = {**cached, **{k: meta[k] for k in _DESCRIPTIVE}}
            _install(cache.engine_path(key), dst, cached)
            if not opts["cache"]:
                cache._drop(key)
        result = {k: v for k, v in cached.items() if k not in ("format", "schema_version")}
        result.update(cache_hit=hit, cached_build_ms=cached.get("build_ms"), build_ms=0.0 if hit else cached["build_ms"],
                      wall_ms=round((time.perf_counter() - t_start) * 1e3, 1), cache_dir=str(root))
        return result


def _targets(flavour: str, option: str, profile) -> tuple[str | None, str | None]:
    """(target SM, local GPU's SM): TensorRT-RTX cross-compiles; TensorRT builds on the GPU it targets."""
    profile_target = trt_env.sm_name(option) or trt_env.sm_name(getattr(profile, "tensorrt_sm", None)
                                                                   or getattr(profile, "compute_capability", None))
    if flavour == "trt-rtx":
        if profile_target is None:
            gpu = trt_env.first_gpu()
            profile_target = trt_env.sm_name(gpu["compute_capability"]) if gpu else None
        return profile_target, None
    gpu = trt_env.require_gpu("building a TensorRT engine (--engine trt)")
    return profile_target, trt_env.sm_name(gpu["compute_capability"])


def _timing_cache_path(option: str, root: Path, flavour: str, version: str, target: str | None, local: str | None,
                       gpu_name: str | None) -> Path | None:
    if flavour == "trt-rtx":
        return None  # its timing-cache API is a no-op
    if option:
        return Path(option).expanduser()
    # timings are the building GPU's: one cache per GPU model (and per target, whose compatibility
    # level limits the tactics)
    gpu = "".join(ch if ch.isalnum() else "-" for ch in (gpu_name or "unknown-gpu").lower()).strip("-")
    return root / f"timing-{flavour}-{version}-{gpu}-{local or 'local'}-for-{target or local or 'local'}.cache"


def _rebuild_command(ctx: PassContext, flavour: str, precision: str) -> str:
    if ctx.rebuild_command:
        return ctx.rebuild_command
    prec = "" if precision == "fp32" else f" --{precision}"
    prof = f" --profile {ctx.profile.name}" if getattr(ctx.profile, "name", None) else ""
    return f"xopt export {ctx.model} --engine {flavour}{prec}{prof} --force"


def _build(cache: EngineCache, key: str, req: BuildRequest, build_plan, timeout_s: int, meta: dict) -> dict:
    from xopt.hashing import sha256_file
    from xopt.machine import describe
    from xopt.optimize import _trt_build

    tmp = cache.new_engine_tmp(key)
    req.engine = str(tmp)
    try:
        answer = _trt_build.run(req.to_json(), build_plan.to_json(), timeout_s=timeout_s, workdir=cache.root)
        gpu = trt_env.first_gpu()
        full = {**meta, "module_version": answer["trt_version"], "build_ms": answer["build_ms"], "size_bytes": answer["size_bytes"], "engine_sha256": sha256_file(tmp),
                "timing_cache_bytes": answer["timing_cache_bytes"], "inputs": answer["inputs"],
                "outputs": answer["outputs"], "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "built_on": {"hostname": platform.node(), "gpu": gpu["name"] if gpu else None,
                             "xopt": describe()["versions"].get("xopt")}}
        cache.store(key, tmp, full)
        return {**full, "key": key}
    finally:
        if tmp.exists():
            os.unlink(tmp)


def _install(cached_engine: Path, dst: Path, meta: dict) -> None:
    from xopt.atomic import copy_file

    # The pipeline owns overwrite policy for dst (it was handed to us as the artifact path).
    copy_file(cached_engine, dst, force=True)
    engine_meta.write(dst, meta_for_copy(meta), force=True)


def meta_for_copy(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if k not in ("format", "schema_version")}


def build_engine_variant(manifest, variant: str, backend: str = "trt-rtx", precision: str = "auto", profile=None,
                         force: bool = False, cache_dir=None, shapes=None, options: dict | None = None) -> dict:
    """Build (or fetch from the cache) the engine of one manifest variant; return its engine record.

    The engine is written beside the variant's ONNX as `<onnx stem>.<backend>.engine` (+ `.json`
    metadata). The record is what `attach_engine` puts into the variant entry's `engines` list
    (the runtime loads `engines[-1]["path"]`); the caller saves the manifest.
    `shapes`: {input: (min, opt, max)} (see optimize/_trt_shapes.py); `profile`: a DeviceProfile,
    a profile name, or None for the default profile.
    """
    from xopt.errors import OutputExistsError
    from xopt.profiles import DeviceProfile, get_profile

    if manifest.directory is None:
        raise UserError("the manifest has no directory to build engines in", "load it with xopt.manifest.load(out_dir)")
    if backend not in BACKENDS:
        raise UserError(f"unknown engine backend {backend!r}", f"use one of {', '.join(BACKENDS)}")
    profile = profile if isinstance(profile, DeviceProfile) else get_profile(profile)
    src_entry = manifest.variant(variant)
    rel = f"{Path(src_entry['path']).stem}.{backend}.engine"
    dst = Path(manifest.directory) / rel
    if dst.exists() and not force:
        raise OutputExistsError(dst)
    prec_flag = f" --{src_entry['precision']}" if src_entry.get("precision") in ("fp16", "int8") else ""
    ctx = PassContext(model=manifest.model, profile=profile, workdir=Path(manifest.directory),
                      cache_dir=Path(cache_dir) if cache_dir else None,
                      engine_shapes=shapes, rebuild_command=f"xopt export {manifest.model} --engine {backend}"
                                                            f"{prec_flag} --profile {profile.name} --force")
    facts = EnginePass().apply(manifest.path_of(variant), dst,
                               {**(options or {}), "backend": backend, "precision": precision}, ctx)
    return {"path": rel, "sha256": facts["engine_sha256"], "backend": backend, "precision": facts["precision"],
            "sm": facts["sm"], "cache_hit": facts["cache_hit"], "engine": facts}


def attach_engine(manifest, variant: str, record: dict) -> dict:
    """Put an engine record into the variant entry: `engines` (one per backend, newest last) and
    `engine` (the newest record's facts). Returns the updated entry."""
    entry = manifest.variant(variant)
    others = [e for e in entry.get("engines", []) if e.get("backend") != record["backend"]]
    entry["engines"] = others + [record]
    entry["engine"] = record["engine"]
    return entry


register_pass(EnginePass())
