"""What a model package declares. Generic code (export, optimize, runtime, analysis, CLI)
only ever reads these fields; model knowledge lives behind them.

A spec must import without torch (the runtime ships without it), so its hooks may be given
as "module:attr" references: `resolve` imports the module the first time the hook is called.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence, Union

Feed = dict  # input name -> np.ndarray


def resolve(ref: str) -> Any:
    """The object a "module:attr" reference names (attr may be dotted)."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"hook reference {ref!r} is not of the form 'module:attr'")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class Hook:
    """A callable standing for a "module:attr" reference, imported on first call."""

    def __init__(self, ref: str):
        self.ref = ref
        self.__name__ = ref.rpartition(":")[2].rpartition(".")[2]
        self._target: Callable | None = None

    def __call__(self, *args, **kwargs):
        if self._target is None:
            self._target = resolve(self.ref)
        return self._target(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Hook({self.ref!r})"


HookRef = Union[Callable[..., Any], str]  # a callable, or "module:attr"


def hook(value: HookRef | None) -> Callable[..., Any] | None:
    return Hook(value) if isinstance(value, str) else value


@dataclass
class Weights:
    """Provenance of the weights a module was built with. `kind` is "checkpoint" or "seeded-random"."""

    kind: str
    seed: int | None = None
    path: str | None = None
    sha256: str | None = None
    note: str = ""

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v not in (None, "")}


@dataclass
class Built:
    """A PyTorch model ready for export: `module` maps the graph inputs (in order) to its outputs."""

    module: Any  # torch.nn.Module in eval mode
    weights: Weights
    config: dict = field(default_factory=dict)  # the configuration it was built with (preset + overrides)
    settings: dict = field(default_factory=dict)  # resolved knobs (e.g. chunk sizes) the manifest records
    extra: dict = field(default_factory=dict)  # model-private state its own hooks share; generic code never reads it


@dataclass
class Graph:
    """One more ONNX graph a variant ships beside its main graph (a spec's `graphs` hook), for
    models the host drives as several graphs (e.g. chunk loops, recycling). The exporter traces
    `module` on `example`, runs the variant's passes, gates it on `validation` (feeds at shapes
    the trace did not see) against the same graph of the FP32 build, and records it in the
    variant's manifest entry under "graphs"."""

    name: str  # unique within the variant; the file is MODEL_VARIANT.NAME.onnx
    module: Any
    input_names: Sequence[str]
    output_names: Sequence[str]
    dynamic_axes: Mapping[str, Mapping[int, str]]
    example: Feed
    validation: list  # [Feed], in input_names order
    tolerance: Tolerance | None = None  # default: the variant's


@dataclass(frozen=True)
class Tolerance:
    """Parity bounds against FP32 PyTorch; `None` leaves a bound unchecked.

    `atol`/`rtol` combine the way `numpy.allclose` does, but against the output's scale:
    the largest |difference| must stay within `atol + rtol * max|reference|`. FP32-vs-FP32
    bounds use them: a runtime upgrade that reorders a sum moves outputs near zero by a large
    relative amount, so a bare `max_rel` measures reordering noise, not a bug.
    """

    max_abs: float | None = None
    mean_abs: float | None = None
    max_rel: float | None = None
    atol: float | None = None
    rtol: float | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class Variant:
    """A named artifact: the passes that turn the FP32 graph into it, and its parity bounds."""

    name: str
    precision: str  # fp32 | fp16 | bf16 | int8 | mixed
    passes: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    tolerance: Tolerance = Tolerance(max_abs=1e-3)
    description: str = ""
    ort_options: Mapping[str, Any] = field(default_factory=dict)  # session options the artifact needs
    export_config: Mapping[str, Any] | None = None  # a variant that needs its own graph (e.g. other chunking)
    with_graphs: bool = True  # False: the main graph alone, without the spec's extra graphs


@dataclass(frozen=True)
class FitHooks:
    """Fit-to-budget (built on `xopt.fitting`). `search(spec, profile, config, options) -> report
    dict of kind "fit"`; `chunk(value, profile, config_name, options) -> config overrides` for
    `xopt export --chunk VALUE`. `options` carry the caller's paths: "artifacts" (an export to
    calibrate against) and "fit_report" (an earlier `xopt fit` report to reuse)."""

    search: HookRef
    chunk: HookRef | None = None

    def __post_init__(self):
        object.__setattr__(self, "search", hook(self.search))
        object.__setattr__(self, "chunk", hook(self.chunk))


@dataclass(frozen=True)
class EngineHooks:
    """TensorRT engines. `shapes(model targets of the device profile) -> {input: (min, opt, max)}`."""

    shapes: HookRef | None = None
    int8_variant: str = "int8"  # the variant an `--engine --int8` build uses (TensorRT wants symmetric Q/DQ)

    def __post_init__(self):
        object.__setattr__(self, "shapes", hook(self.shapes))


@dataclass
class EvalItem:
    """One scored unit of a dataset (an image, a video, a track, a chain). Generic code reads
    `name` only and hands the item back to the model's hooks."""

    name: str
    input: Any  # what the model runs on (a path, a list of frame paths, ...)
    reference: Any  # the ground truth (a path, {stem: path}, ...)
    meta: dict = field(default_factory=dict)


@dataclass
class EvalDataset:
    layout: str  # the layout that was recognised, in words ("MUSDB18-HQ test subset", ...)
    items: list  # [EvalItem]
    notes: list = field(default_factory=list)  # what was resampled, trimmed, or scored partly
    method: str = ""  # how the metrics are computed (library, version, convention), for the report


@dataclass(frozen=True)
class EvalHooks:
    """Accuracy against ground truth (`xopt eval`) and label-free checks (`xopt eval`, `run`,
    `profile`). Every hook may be a "module:attr" string.

    dataset(data: Path | None, options: {name: str | None}) -> EvalDataset: the user's layout
        read; a missing pair is a UserError naming every one, an unreadable file names the file.
    predict(pipeline, item) -> output: the model's pipeline on one item (model-private type).
    prediction_paths(directory, item) -> [Path]: the files `--predictions DIR` must hold for
        it (the runner lists every missing one at once); read_prediction(directory, item) -> output.
    score(item, output) -> {metric: float, ..., "parts": {part: {metric: float}}?, "notes": [str]?}
    aggregate([score, ...]) -> {metric: float}: the dataset's aggregate (e.g. SiSEC medians).
    item_checks(item, output, info) -> [check]: label-free checks on one scored output.
    checks(raw, output, info) -> [check]: label-free checks on what a pipeline took and gave:
        `raw` and `output` are the pipeline's own `__call__` argument and result (a list of them
        for sequence checks such as video flicker); `info` = {"weights": manifest weights,
        "source": facts of the input as received (e.g. samplerate, channels)}. A check is
        {"name", "value", "unit", "expected": str, "ok": bool, "message": one line naming the
        likely cause when not ok}. `xopt profile` calls it on its end-to-end samples.
    run_checks(src: Path, written: [Path], info) -> [check]: the same checks on the files
        `xopt run` read and wrote.
    metrics: {metric: "higher" | "lower"} (which way is better), summary columns first.
    options: {name: help}: dataset flags `xopt eval MODEL --help` shows (`--name VALUE`).
    """

    dataset: HookRef
    predict: HookRef
    score: HookRef
    aggregate: HookRef
    prediction_paths: HookRef | None = None
    read_prediction: HookRef | None = None
    item_checks: HookRef | None = None
    checks: HookRef | None = None
    run_checks: HookRef | None = None
    metrics: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        for name in ("dataset", "predict", "score", "aggregate", "prediction_paths", "read_prediction",
                     "item_checks", "checks", "run_checks"):
            object.__setattr__(self, name, hook(getattr(self, name)))


@dataclass(frozen=True)
class BenchTargets:
    """What `xopt bench` checks: minimum speed-ups per variant, and drift against the noise floor."""

    vs_torch: Mapping[str, float] = field(default_factory=dict)  # ORT variant vs torch eager
    vs_fp32: Mapping[str, float] = field(default_factory=dict)  # variant vs ORT FP32
    drift_key: str | None = None  # the drift column shown; default: the gate's key


@dataclass(frozen=True)
class DriftGate:
    """When a variant's drift is acceptable, in the model's own terms. It passes when the domain
    term `key` is within `noise_multiple` times the FP32 model's own drift under input noise (the
    noise floor), or meets the absolute `limit` (a level below which users cannot tell, e.g. an
    SDR in dB), whichever is looser. For terms where higher is better and which are measured in
    dB (SDR), k times the noise is the floor minus 20·log10(k) dB."""

    key: str
    higher_is_better: bool = False
    noise_multiple: float | None = 3.0
    limit: float | None = None
    unit: str = ""
    db: bool = False  # the term is in dB: multiples of the noise become dB offsets
    # what a drop means for --max-drop (xopt.gate.drop): a higher-is-better term's value when
    # identical to FP32 (IoU, lDDT: 1), and for dB terms the FP32 model's own quality, on which
    # a parity in dB is turned into an estimated loss (HTDemucs: ~9 dB SDR on MUSDB)
    perfect: float | None = None
    nominal: float | None = None


@dataclass(frozen=True)
class ShapeFlag:
    """An input-size flag of `xopt profile` (like trtexec's --shapes), derived from the spec:
    `--<flag> VALUE` sets the device profile's model target `target`."""

    flag: str
    target: str
    type: type = int
    help: str = ""
    as_list: bool = False  # the target holds a list (e.g. residue counts); the flag sets one value


#: ModelSpec fields that hold hooks ("module:attr" strings are wrapped in a lazy Hook)
_HOOKS = ("build", "example_inputs", "validation_inputs", "calibration_inputs", "drift", "perturb",
          "profile_inputs", "budget_checks", "shrink", "describe_inputs", "graphs", "assemble", "previews",
          "precision_group", "fp32_nodes")


@dataclass
class ModelSpec:
    name: str
    task: str
    # torch side
    build: HookRef  # build(checkpoint=None, config=None, seed=0) -> Built
    input_names: Sequence[str]
    output_names: Sequence[str]
    dynamic_axes: Mapping[str, Mapping[int, str]]
    example_inputs: HookRef  # (Built) -> Feed: traced shapes
    validation_inputs: HookRef  # (Built) -> list[Feed]: parity shapes; include one the trace did not see
    variants: Mapping[str, Variant]
    calibration_inputs: HookRef  # (Built, n) -> Iterable[Feed]
    # numpy side (importable without torch)
    drift: HookRef  # (ref outputs, variant outputs, feed) -> dict of domain terms
    perturb: HookRef  # (Feed, np.random.Generator) -> Feed: ±1 input quantum, for the noise floor
    profile_inputs: HookRef  # (profile targets, n, seed) -> list[Feed]
    pipeline: str = ""  # "module:Class" of the numpy pipeline an app embeds
    opset: int = 17
    exporter: str = "legacy"  # legacy | dynamo
    export_options: Mapping[str, Any] = field(default_factory=dict)  # extra torch.onnx.export kwargs
    patchers: Sequence[HookRef] = ()  # each: module -> context manager active during export
    configs: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: {"default": {}})
    default_config: str = "default"
    covers: str = "whole model"  # what part of the model the exported graph is
    scopes: Mapping[str, Sequence[str]] = field(default_factory=dict)  # named node-name prefixes (e.g. backbone)
    drift_keys: Sequence[str] = ()  # drift terms shown in summaries, most important first
    higher_is_better: Sequence[str] = ()  # drift terms where a larger value is better (IoU, SDR); others are distances
    budget_checks: HookRef | None = None  # (model targets, result) -> list of check dicts
    # shrink(model targets) -> smaller targets (half the resolution, a shorter segment, fewer residues) or
    # None at the floor; the profiler uses it to say what does fit when a run runs out of memory
    shrink: HookRef | None = None
    packages: Sequence[str] = ()  # distributions whose versions every report records, e.g. ("demucs",)
    fit: FitHooks | None = None
    # graphs(Built) -> [Graph]: graphs each variant ships beside its main one (manifest entry "graphs");
    # assemble(main Session, {graph name: Session}, manifest entry) -> Session: what xopt.runtime.load
    # returns for an entry with graphs (e.g. a host loop over them); default: the main session
    graphs: HookRef | None = None
    assemble: HookRef | None = None
    evaluation: EvalHooks | None = None  # `xopt eval` and label-free checks
    engine: EngineHooks = field(default_factory=EngineHooks)
    bench: BenchTargets = field(default_factory=BenchTargets)
    gate: DriftGate | None = None  # default: the first drift key, lower is better, 3x the noise floor
    shape_flags: Sequence[ShapeFlag] = ()
    # describe_inputs(model targets, feeds) -> {"text": "512x512", ...}: the input size a report states
    describe_inputs: HookRef | None = None
    # previews(feeds, fp32 outputs, variant outputs, out_dir) -> [preview record] (xopt.previews): the
    # model's own outputs, FP32 beside the variant, as files a report shows (a matte, stems, a structure)
    previews: HookRef | None = None
    drift_units: Mapping[str, str] = field(default_factory=dict)  # drift term -> unit, for report axes
    # precision_group(onnx NodeProto) -> readable unit ("backbone stage 2", "Evoformer block 3") or
    # None (the default: the node's weight module path): what the mixed-precision search keeps in
    # higher precision as one piece, and what its report names
    precision_group: HookRef | None = None
    # fp32_nodes(onnx ModelProto) -> node names the gated passes never lower (a layout the
    # backend runs faster in FP32, or that breaks in low precision), whatever the search finds
    fp32_nodes: HookRef | None = None

    def __post_init__(self):
        for name in _HOOKS:
            setattr(self, name, hook(getattr(self, name)))
        self.patchers = tuple(hook(p) for p in self.patchers)

    def variant(self, name: str) -> Variant:
        from xopt.errors import UnknownChoiceError

        if name not in self.variants:
            raise UnknownChoiceError(f"variant for {self.name}", name, self.variants)
        return self.variants[name]

    def config(self, name: str | None, overrides: Mapping[str, Any] | None = None) -> dict:
        from xopt.errors import UnknownChoiceError

        name = name or self.default_config
        if name not in self.configs:
            raise UnknownChoiceError(f"config for {self.name}", name, self.configs)
        return {"preset": name, **self.configs[name], **(overrides or {})}
