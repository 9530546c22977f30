"""The pass interface: an optimization pass takes an ONNX path and typed options and
writes a new ONNX (or engine) path. Passes know nothing about models beyond what the
`PassContext` hands them from the spec.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from xopt.options import Option, OptionSet
from xopt.registry import Registry


@dataclass
class PassContext:
    """What a pass may know about the model: scopes, calibration data, the device profile."""

    model: str
    scopes: dict[str, list[str]] = field(default_factory=dict)
    calibration: Callable[[int], Iterable[dict]] | None = None  # n -> feeds
    profile: Any = None  # xopt.profiles.DeviceProfile
    workdir: Path | None = None
    cache_dir: Path | None = None
    engine_shapes: dict | None = None  # {input: (min, opt, max)}: TensorRT optimisation profiles (see _trt_shapes)
    rebuild_command: str | None = None  # what an engine mismatch tells the user to run
    # what the export was built with (the manifest's config and weights): a pass that makes the
    # profile's inputs passes them on, as the profiler does (run_targets)
    config: dict | None = None
    weights: dict | None = None


class Pass:
    name: str = ""
    description: str = ""
    options: OptionSet = OptionSet()
    output_suffix: str = ".onnx"

    def apply(self, src: Path, dst: Path, opts: dict[str, Any], ctx: PassContext) -> dict:
        """Write the transformed artifact to `dst`; return facts for the manifest."""
        raise NotImplementedError


PASSES: Registry[Pass] = Registry("optimization pass", "xopt.optimize", skip=("base", "pipeline"))
register_pass = PASSES.register
get_pass = PASSES.get
all_passes = PASSES.all


__all__ = ["Pass", "PassContext", "Option", "OptionSet", "PASSES", "register_pass", "get_pass", "all_passes"]
