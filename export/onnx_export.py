"""torch -> ONNX, through either exporter, with the spec's patchers active."""
from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from xopt.errors import InternalError

EXPORTERS = ("legacy", "dynamo")


def _dynamic_shapes(input_names, dynamic_axes):
    """Turn `dynamic_axes` into torch.export dims; one Dim per axis name, so names shared
    across inputs become the same symbol."""
    import torch

    dims: dict[str, object] = {}
    shapes = []
    for name in input_names:
        axes = dynamic_axes.get(name, {})
        shapes.append({int(ax): dims.setdefault(label, torch.export.Dim(label)) for ax, label in axes.items()} or None)
    return tuple(shapes)


def to_onnx(module, feed: Mapping[str, np.ndarray], path: str | os.PathLike, input_names: Sequence[str],
            output_names: Sequence[str], dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
            opset: int = 17, exporter: str = "legacy",
            patchers: Sequence[Callable] = (), export_options: Mapping | None = None) -> Path:
    """Export `module` (called with the feed's arrays in `input_names` order) to `path`.

    Writes only `path`: callers hand a temporary path and rename after validation.
    """
    import onnx
    import torch

    if exporter not in EXPORTERS:
        raise InternalError(f"unknown exporter {exporter!r}")
    path = Path(path)
    args = tuple(torch.from_numpy(np.ascontiguousarray(feed[n])) for n in input_names)
    dynamic_axes = dict(dynamic_axes or {})
    options = dict(export_options or {})
    module.eval()
    with contextlib.ExitStack() as stack, torch.inference_mode(False), torch.no_grad():
        for patch in patchers:
            stack.enter_context(patch(module))
        with warnings.catch_warnings():
            # Tracer warnings about Python control flow are expected for these models and
            # are covered by the parity gate at shapes the trace did not see.
            warnings.simplefilter("ignore")
            if exporter == "legacy":
                torch.onnx.export(module, args, str(path), input_names=list(input_names),
                                  output_names=list(output_names), dynamic_axes=dynamic_axes,
                                  opset_version=opset, do_constant_folding=True, dynamo=False, **options)
            else:
                options.setdefault("dynamic_shapes", _dynamic_shapes(input_names, dynamic_axes))
                options.setdefault("external_data", False)
                program = torch.onnx.export(module, args, input_names=list(input_names),
                                            output_names=list(output_names), opset_version=opset,
                                            dynamo=True, **options)
                program.save(str(path), external_data=options["external_data"])
    model = onnx.load(str(path), load_external_data=False)
    onnx.checker.check_model(str(path) if path.stat().st_size > 1.9e9 else model)
    return path


def io_signature(path: str | os.PathLike) -> tuple[list[dict], list[dict]]:
    """Names, element types and (symbolic) shapes of a graph's inputs and outputs."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    init = {i.name for i in model.graph.initializer}

    def describe(values):
        out = []
        for v in values:
            if v.name in init:
                continue
            t = v.type.tensor_type
            shape = [d.dim_param or (d.dim_value if d.HasField("dim_value") else None) for d in t.shape.dim]
            out.append({"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
                        "shape": shape})
        return out

    return describe(model.graph.input), describe(model.graph.output)


def opset_of(path: str | os.PathLike) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
