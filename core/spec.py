"""What a model module declares. Generic code (export, optimize, runtime, profiler, CLI)
only ever reads these fields; model knowledge lives behind them.

Spec modules must import without torch (the runtime ships without it): import torch
inside the callables.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

Feed = dict  # input name -> np.ndarray


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
    extra: dict = field(default_factory=dict)  # model-private state the spec's callables may share


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


@dataclass
class ModelSpec:
    name: str
    summary: str
    task: str
    # torch side
    build: Callable[..., Built]  # build(checkpoint=None, config=None, seed=0) -> Built
    input_names: Sequence[str]
    output_names: Sequence[str]
    dynamic_axes: Mapping[str, Mapping[int, str]]
    example_inputs: Callable[[Built], Feed]  # traced shapes
    validation_inputs: Callable[[Built], list[Feed]]  # parity shapes; include one the trace did not see
    variants: Mapping[str, Variant]
    calibration_inputs: Callable[[Built, int], Iterable[Feed]]
    # numpy side (importable without torch)
    drift: Callable[[Mapping[str, np.ndarray], Mapping[str, np.ndarray], Feed], dict]
    perturb: Callable[[Feed, np.random.Generator], Feed]  # ±1 input quantum, for the noise floor
    profile_inputs: Callable[[Mapping[str, Any], int, int], list[Feed]]  # (profile, n, seed)
    pipeline: str = ""  # "module:Class" of the numpy pipeline an app embeds
    opset: int = 17
    exporter: str = "legacy"  # legacy | dynamo
    export_options: Mapping[str, Any] = field(default_factory=dict)  # extra torch.onnx.export kwargs
    patchers: Sequence[Callable] = ()  # each: module -> context manager active during export
    configs: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: {"default": {}})
    default_config: str = "default"
    covers: str = "whole model"  # what part of the model the exported graph is
    scopes: Mapping[str, Sequence[str]] = field(default_factory=dict)  # named node-name prefixes (e.g. backbone)
    input_kinds: Sequence[str] = ()  # file kinds `xopt run` accepts, e.g. ("image", "video")
    drift_keys: Sequence[str] = ()  # drift terms shown in summaries, most important first
    budget_checks: Callable[[Mapping[str, Any], Mapping[str, Any]], list[dict]] | None = None
    extras_needed: Sequence[str] = ()  # optional extras the torch side needs, e.g. ("openfold",)
    checkpoint_formats: str = ""  # human description for --help
    # fit(spec, profile, config, options) -> report dict of kind "fit"; None: the model has no fit search
    fit: Callable[..., dict] | None = None
    # chunk_options(value, profile, config_name) -> config overrides for `xopt export --chunk`
    chunk_options: Callable[..., dict] | None = None
    # shrink(model targets) -> smaller targets (half the resolution, a shorter segment, fewer residues) or
    # None at the floor; the profiler uses it to say what does fit when a run runs out of memory
    shrink: Callable[[Mapping[str, Any]], dict | None] | None = None
    # engine_shapes(model targets of the device profile) -> {input: (min, opt, max)} for TensorRT profiles
    engine_shapes: Callable[[Mapping[str, Any]], dict] | None = None
    # bench targets: {"vs_torch": {variant: min speed-up}, "vs_fp32": {variant: min}, "drift_key", "drift_vs_noise"}
    bench_targets: Mapping[str, Any] = field(default_factory=dict)

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
