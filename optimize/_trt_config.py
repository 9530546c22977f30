"""How a TensorRT builder is configured, per flavour and version.

- TensorRT 10: weakly typed network; precision through builder flags (FP16, INT8);
  INT8 through Q/DQ in the graph (explicit) or a calibration cache (implicit).
- TensorRT 11 and later: strongly typed only, no precision flags, no calibrators; the
  precision is the ONNX graph's (an FP16 graph, INT8 = Q/DQ).
- TensorRT-RTX: strongly typed like 11, plus an explicit target compute capability so
  an SM86 engine builds ahead of time on a machine without that GPU; its timing-cache
  calls are no-ops, so none is set.

`plan` decides (pure, no TensorRT import); `configure` makes the calls on whatever
module it is handed, which is how tests check the dispatch with fake modules.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from xopt.errors import UserError
from xopt.optimize._trt_graph import GraphFacts
from xopt.runtime.trt_env import cc_name, major

PRECISIONS = ("auto", "fp32", "fp16", "int8")


@dataclass
class BuildRequest:
    """Everything the build worker needs; JSON round-trips through the worker's argv file."""

    onnx: str
    engine: str  # where the worker writes the serialized engine
    flavour: str  # trt | trt-rtx
    precision: str  # resolved: fp32 | fp16 | int8
    shapes: dict  # _trt_shapes.Shapes
    workspace_mb: int
    compute_capability: str | None = None  # target SM name, e.g. "SM86"
    local_compute_capability: str | None = None  # the GPU here (NVML), e.g. "SM90"
    timing_cache: str | None = None
    calibration_cache: str | None = None
    optimization_level: int | None = None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class BuildPlan:
    strongly_typed: bool
    flags: list[str] = field(default_factory=list)  # BuilderFlag member names
    compute_capability: str | None = None  # set_compute_capability target (TRT-RTX)
    hardware_compatibility: str = "none"  # none | ampere+ (TensorRT for another Ampere+ GPU)
    use_timing_cache: bool = False
    use_calibration_cache: bool = False
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def resolve_precision(requested: str, facts: GraphFacts) -> str:
    if requested not in PRECISIONS:
        raise UserError(f"engine precision {requested!r} is unknown", f"use one of {', '.join(PRECISIONS)}")
    return facts.natural_precision() if requested == "auto" else requested


def plan(req: BuildRequest, version: str, facts: GraphFacts) -> BuildPlan:
    """The builder configuration for this flavour/version; UserError for what it cannot do."""
    if req.precision == "int8" and facts.has_qdq:
        facts.check_int8_for_tensorrt(req.onnx)
    if req.flavour == "trt-rtx":
        out = _strongly_typed(req, facts, f"TensorRT-RTX {version}")
        out.compute_capability = req.compute_capability
        out.notes.append("TensorRT-RTX timing-cache calls are no-ops: no timing cache used")
        if not req.compute_capability:
            raise UserError("TensorRT-RTX needs a target compute capability to build ahead of time",
                            "pass compute_capability (e.g. 8.6) or a GPU device profile")
        return out
    if req.flavour != "trt":
        raise UserError(f"unknown engine backend {req.flavour!r}", "use trt or trt-rtx")
    m = major(version)
    if m < 10:
        raise UserError(f"TensorRT {version} is too old for xopt", 'install TensorRT 10 or later: pip install "xopt[trt]"')
    out = _strongly_typed(req, facts, f"TensorRT {version}") if m >= 11 else _weakly_typed(req, facts)
    out.use_timing_cache = bool(req.timing_cache)
    out.hardware_compatibility = _hardware_compat(req)
    return out


def _weakly_typed(req: BuildRequest, facts: GraphFacts) -> BuildPlan:
    out = BuildPlan(strongly_typed=False)
    if req.precision == "fp16":
        out.flags.append("FP16")
    elif req.precision == "int8":
        out.flags.append("INT8")
        if not facts.has_qdq:
            if not req.calibration_cache:
                raise UserError(f"{Path(req.onnx).name} has no Q/DQ nodes and no INT8 calibration cache was given",
                                "build the engine from the int8 (Q/DQ) variant or pass calibration_cache")
            out.use_calibration_cache = True
    if req.calibration_cache and not out.use_calibration_cache:
        out.notes.append("calibration cache ignored: the precision is not INT8 or the graph carries Q/DQ scales")
    return out


def _strongly_typed(req: BuildRequest, facts: GraphFacts, who: str) -> BuildPlan:
    natural = facts.natural_precision()
    if req.calibration_cache:
        raise UserError(f"{who} is strongly typed and has no INT8 calibrators, so a calibration cache cannot be used",
                        "build from the int8 (Q/DQ) variant instead")
    if req.precision != natural:
        fix = {"fp16": "build from the fp16 variant's ONNX (xopt export ... --fp16)",
               "int8": "build from the int8 (Q/DQ) variant's ONNX (xopt export ... --int8)",
               "fp32": "build from the fp32 ONNX"}[req.precision]
        raise UserError(f"{who} is strongly typed: precision comes from the ONNX graph, and "
                        f"{Path(req.onnx).name} is {natural}, not {req.precision}", fix)
    return BuildPlan(strongly_typed=True)


def _hardware_compat(req: BuildRequest) -> str:
    target, local = req.compute_capability, req.local_compute_capability
    if not target or not local or target == local:
        return "none"
    if _sm_number(target) >= 80 and _sm_number(local) >= 80:
        return "ampere+"
    raise UserError(f"TensorRT builds for the GPU it runs on ({local}), not for {target}",
                    "build on a GPU of the target's generation, or use --engine trt-rtx to cross-compile")


def target_facts(req: BuildRequest, p: BuildPlan, gpu_name: str | None) -> dict:
    """What the engine runs on, for its metadata and cache key. TensorRT-RTX compiles for the
    target it is given, on any machine. Full TensorRT tunes its kernels on the GPU that builds:
    built there for another Ampere-or-newer target it is an AMPERE_PLUS engine (runs on SM80 and
    later, slower kernels), labelled as such with the building GPU, never as the target's SM."""
    target, local = req.compute_capability, req.local_compute_capability
    if req.flavour == "trt-rtx":
        return {"sm": target, "compute_capabilities": [cc_name(target)], "hardware_compatibility": "none",
                "target_sm": target, "built_on_sm": None, "built_on_gpu": None}
    native = local or target
    ampere_plus = p.hardware_compatibility == "ampere+"
    return {"sm": "SM80+" if ampere_plus else native, "compute_capabilities": [cc_name(native)],
            "hardware_compatibility": p.hardware_compatibility, "target_sm": target or native,
            "built_on_sm": local, "built_on_gpu": gpu_name}


def _sm_number(sm: str) -> int:
    return int("".join(ch for ch in sm if ch.isdigit()) or 0)


def network_flags(trt, p: BuildPlan) -> int:
    if not p.strongly_typed:
        return 0
    enum = getattr(trt, "NetworkDefinitionCreationFlag", None)
    member = getattr(enum, "STRONGLY_TYPED", None) if enum is not None else None
    # TensorRT 11 may drop the flag once strong typing is the only mode.
    return 0 if member is None else 1 << int(member)


def configure(trt, builder, logger, req: BuildRequest, p: BuildPlan):
    """Parse the ONNX into a network and set up the builder config; returns (network, config, parser, timing_cache)."""
    network = builder.create_network(network_flags(trt, p))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(req.onnx)):
        errors = [str(parser.get_error(i)).splitlines()[0] for i in range(parser.num_errors)]
        raise UserError(f"TensorRT's ONNX parser rejected {Path(req.onnx).name}: {' | '.join(errors)[:600]}",
                        "check the operators against the TensorRT ONNX support matrix")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(req.workspace_mb) << 20)
    for flag in p.flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if p.compute_capability:
        target = getattr(trt.ComputeCapability, p.compute_capability, None)
        if target is None:
            known = [m for m in getattr(trt.ComputeCapability, "__members__", {}) if m.startswith("SM")]
            raise UserError(f"this TensorRT-RTX cannot target {p.compute_capability}",
                            f"choose one of {', '.join(known)} (compute_capability option or another profile)")
        config.num_compute_capabilities = 1  # must be sized before the slot is set
        config.set_compute_capability(target, 0)
    if p.hardware_compatibility == "ampere+":
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if req.optimization_level is not None:
        config.builder_optimization_level = int(req.optimization_level)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        name = network.get_input(i).name
        s = req.shapes[name]
        profile.set_shape(name, tuple(s["min"]), tuple(s["opt"]), tuple(s["max"]))
    config.add_optimization_profile(profile)
    cache = None
    if p.use_timing_cache:
        blob = Path(req.timing_cache).read_bytes() if Path(req.timing_cache).exists() else b""
        cache = config.create_timing_cache(blob)
        config.set_timing_cache(cache, False)
    if p.use_calibration_cache:
        config.int8_calibrator = cache_calibrator(trt, Path(req.calibration_cache).read_bytes())
    return network, config, parser, cache


def cache_calibrator(trt, blob: bytes):
    """An INT8 calibrator that only replays a calibration cache (TensorRT 10's implicit INT8)."""

    class _CacheOnly(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)

        def get_batch_size(self):
            return 1

        def get_batch(self, names):  # no data: TensorRT must take every scale from the cache
            return None

        def read_calibration_cache(self):
            return blob

        def write_calibration_cache(self, cache):
            return None

    return _CacheOnly()
