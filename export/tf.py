"""TensorFlow / Keras models in: a SavedModel directory or a .keras file becomes the FP32 ONNX
graph of a spec's contract, and the TensorFlow model itself becomes the parity reference.

The spec's contract is NCHW (`input [B,3,H,W] -> output [B,1,H,W]` for MODNet) while TF models
are usually NHWC. The conversion wraps the model in transposes NCHW -> model -> NCHW before
tf2onnx traces it; tf2onnx itself moves every TF convolution to NCHW with transposes around it,
and its transpose optimiser cancels those against ours, so the artifact is a plain NCHW graph
(no Transpose left for a conv net) and runtimes, pipelines and passes stay unchanged. The
manifest records what happened in each variant's `source.layout`.

    source = from_tf("saved_model_dir", get_model("modnet"), "modnet_tf.onnx")
    export_model("modnet", ["fp32", "fp16"], source=source)
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from xopt.errors import UserError
from xopt.export import _tf_load
from xopt.export._tf_load import TFModel, load, savedmodel_sha256  # noqa: F401  (public API)
from xopt.export.pipeline import Source
from xopt.extras import dist_version
from xopt.spec import Built, ModelSpec, Weights

# axis permutations into and out of the spec's NCHW order, by the model's own layout
TO_SOURCE = {"NHWC": (0, 2, 3, 1), "NCHW": (0, 1, 2, 3)}
TO_NCHW = {"NHWC": (0, 3, 1, 2), "NCHW": (0, 1, 2, 3)}
LAYOUTS = ("auto", "NHWC", "NCHW")


@dataclass
class TFSource(Source):
    """`Source` for the export pipeline: `onnx_path`, `reference` (feed -> outputs, both in the
    spec's names and layout), `weights` (provenance dict) and `facts` (recorded under each
    variant's "source" in the manifest; `facts["layout"]` is `layout`), plus:"""

    layout: dict = field(default_factory=dict)
    model: TFModel | None = None
    # Spec-dynamic axes the graph fixed (a model saved with a fixed input size): {axis: size}
    fixed: dict = field(default_factory=dict)

    def adapt(self, feed: Mapping[str, np.ndarray]) -> dict:
        """A spec feed cropped (centre) or edge-padded to the graph's fixed sizes; unchanged
        for a graph with the spec's dynamic axes."""
        return {k: _fit_axes(v, self.fixed) for k, v in feed.items()}


def _fit_axes(x: np.ndarray, fixed: Mapping[int, int]) -> np.ndarray:
    for axis, size in fixed.items():
        n = x.shape[axis]
        if n > size:
            start = (n - size) // 2
            x = np.take(x, range(start, start + size), axis=axis)
        elif n < size:
            pad = [(0, 0)] * x.ndim
            pad[axis] = ((size - n) // 2, size - n - (size - n) // 2)
            x = np.pad(x, pad, mode="edge")
    return np.ascontiguousarray(x)


# ---------------------------------------------------------------- layout

def _single(names: Sequence[str], what: str, spec: ModelSpec) -> str:
    if len(names) != 1:
        raise UserError(f"model {spec.name} has {len(names)} {what}s; --from-tf converts models with one input and "
                        "one output", "export this model from PyTorch instead")
    return names[0]


def _contract_feed(spec: ModelSpec) -> dict:
    """One of the spec's validation feeds: its static axes are the contract's (e.g. 3 channels).

    No PyTorch model exists on this route; spec input generators only read the config."""
    stub = Built(module=None, weights=Weights("tensorflow"), config=spec.config(None))
    return spec.validation_inputs(stub)[0]


def _fits(shape: tuple, want: tuple, dynamic: Mapping[int, str]) -> bool | None:
    """Does a model shape (already in NCHW order) fit the contract? None when only dynamic
    axes are known (nothing contradicts, nothing confirms)."""
    if len(shape) != len(want):
        return False
    confirmed = False
    for axis, (have, need) in enumerate(zip(shape, want)):
        if axis in dynamic or have is None:
            continue
        if have != need:
            return False
        confirmed = True
    return True if confirmed else None


def detect_layout(model: TFModel, spec: ModelSpec, feed: Mapping[str, np.ndarray], layout: str = "auto") -> str:
    """NHWC or NCHW: the order whose static axes match the contract's (channels); when the
    shapes cannot tell (a fully dynamic signature) the one the model runs on."""
    if layout not in LAYOUTS:
        raise UserError(f"unknown layout '{layout}'", f"choose one of: {', '.join(LAYOUTS)}")
    in_name = _single(spec.input_names, "input", spec)
    want = tuple(feed[in_name].shape)
    if len(model.input_shape) != 4 or len(want) != 4:
        raise UserError(f"{model.path} takes a rank-{len(model.input_shape)} input, the {spec.name} contract a "
                        f"rank-{len(want)} one", "convert a model with an image input [B,H,W,C] or [B,C,H,W]")
    dynamic = spec.dynamic_axes.get(in_name, {})
    fits = {lay: _fits(tuple(model.input_shape[i] for i in TO_NCHW[lay]), want, dynamic) for lay in TO_NCHW}
    if layout != "auto":
        candidates = [layout] if fits[layout] is not False else []
    else:
        candidates = [lay for lay, ok in fits.items() if ok]
        if len(candidates) != 1:
            # No static axis confirms a layout (e.g. a fully dynamic signature): keep those the model runs on.
            unsure = candidates or [lay for lay, ok in fits.items() if ok is None]
            candidates = [lay for lay in unsure if _runs(model, feed[in_name], lay)]
    if not candidates:
        raise UserError(f"{model.path} takes {_fmt(model.input_shape)}, which does not fit the {spec.name} contract "
                        f"{_fmt(want)} (NCHW) as NHWC or as NCHW", "convert a model with the contract's channels")
    if len(candidates) > 1:
        raise UserError(f"cannot tell whether {model.path} takes NHWC or NCHW input (its signature is "
                        f"{_fmt(model.input_shape)}, the {spec.name} contract {_fmt(want)} in NCHW)",
                        "give the layout explicitly (layout='NHWC' or 'NCHW')")
    return candidates[0]


def _runs(model: TFModel, x: np.ndarray, layout: str) -> bool:
    tf = _tf_load.tensorflow()
    try:
        model.call(tf.constant(np.transpose(x, TO_SOURCE[layout])))
        return True
    except Exception:  # a shape/channel mismatch raises one of several TF error types
        return False


def _fmt(shape) -> str:
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"


# ---------------------------------------------------------------- reference

def tf_reference(model: TFModel, feed: Mapping[str, np.ndarray], layout: str = "NHWC",
                 input_name: str = "input", output_name: str = "output") -> dict[str, np.ndarray]:
    """The TF model's own outputs for a feed in the spec's NCHW layout, returned in NCHW."""
    tf = _tf_load.tensorflow()
    x = np.ascontiguousarray(np.transpose(feed[input_name], TO_SOURCE[layout]))
    y = model.call(tf.constant(x, dtype=model.dtype))
    y = np.asarray(y.numpy() if hasattr(y, "numpy") else y, dtype=np.float32)
    if y.ndim != 4:
        raise UserError(f"{model.path} returned a rank-{y.ndim} output", "convert a model whose output is [B,H,W,C]")
    return {output_name: np.ascontiguousarray(np.transpose(y, TO_NCHW[layout]))}


# ---------------------------------------------------------------- conversion

def _nchw_function(model: TFModel, layout: str, output_name: str):
    tf = _tf_load.tensorflow()

    def wrapped(x):
        y = model.call(tf.transpose(x, TO_SOURCE[layout]) if layout != "NCHW" else x)
        return {output_name: tf.transpose(y, TO_NCHW[layout]) if layout != "NCHW" else y}

    return tf.function(wrapped)


def _convert(model: TFModel, spec: ModelSpec, layout: str):
    tf = _tf_load.tensorflow()
    tf2onnx = _tf_load.tf2onnx()
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    in_name, out_name = spec.input_names[0], spec.output_names[0]
    shape = [model.input_shape[i] for i in TO_NCHW[layout]]
    sig = (tf.TensorSpec(shape, model.dtype, name=in_name),)
    try:
        proto, _ = tf2onnx.convert.from_function(_nchw_function(model, layout, out_name), input_signature=sig,
                                                 opset=spec.opset)
    except Exception as exc:  # tracing and conversion raise anything from TypeError to TF graph errors
        text = str(exc)
        if "UpSampling2D" in text:
            raise _tf_load.upsampling_error(model.path) from exc
        if "symbolic" in text and "bool" in text:
            raise UserError(f"{model.path} cannot be traced with a dynamic height/width ({_tf_load._first_line(exc)})",
                            "compute sizes with tf.shape() inside the layer, or re-save the model with a fixed "
                            "input size") from exc
        raise UserError(f"tf2onnx could not convert {model.path} ({_tf_load._first_line(exc)})",
                        "check that the model runs in TensorFlow on one image, or export it from PyTorch") from exc
    return proto


def _name_axes(proto, spec: ModelSpec) -> None:
    """tf2onnx calls every dynamic axis unk__N; use the spec's names (batch, height, width)."""
    for values, names in ((proto.graph.input, spec.input_names), (proto.graph.output, spec.output_names)):
        for value in values:
            if value.name not in names:
                continue
            axes = spec.dynamic_axes.get(value.name, {})
            for i, dim in enumerate(value.type.tensor_type.shape.dim):
                if i in axes and not dim.HasField("dim_value"):
                    dim.dim_param = axes[i]


def _check_io(proto, spec: ModelSpec, path: Path) -> None:
    inputs = [v.name for v in proto.graph.input if v.name not in {i.name for i in proto.graph.initializer}]
    outputs = [v.name for v in proto.graph.output]
    if inputs != list(spec.input_names) or outputs != list(spec.output_names):
        raise UserError(f"converting {path} gave graph inputs {inputs} and outputs {outputs}, the {spec.name} "
                        f"contract needs {list(spec.input_names)} -> {list(spec.output_names)}",
                        "convert a model with one image input and one output")


def _fixed_axes(model: TFModel, layout: str, spec: ModelSpec) -> dict[int, int]:
    dynamic = spec.dynamic_axes.get(spec.input_names[0], {})
    shape = [model.input_shape[i] for i in TO_NCHW[layout]]
    return {axis: shape[axis] for axis in dynamic if shape[axis] is not None}


def from_tf(path, spec: ModelSpec, out_path, force: bool = False, layout: str = "auto",
            custom_modules: Sequence[str] = ()) -> TFSource:
    """Convert the TF model at `path` into `out_path` (FP32 ONNX honouring `spec`'s NCHW contract)."""
    import onnx

    in_name = _single(spec.input_names, "input", spec)
    out_name = _single(spec.output_names, "output", spec)
    started = time.perf_counter()
    model = load(path, custom_modules)
    feed = _contract_feed(spec)
    if model.dtype.name != "float32":
        raise UserError(f"{model.path} takes {model.dtype.name} input; the {spec.name} contract feeds float32",
                        "convert a model that takes the normalised float32 image")
    lay = detect_layout(model, spec, feed, layout)
    converting = time.perf_counter()
    proto = _convert(model, spec, lay)
    convert_s = time.perf_counter() - converting
    _check_io(proto, spec, model.path)
    _name_axes(proto, spec)
    from xopt.atomic import atomic_path

    with atomic_path(out_path, force=force) as tmp:
        onnx.save(proto, str(tmp))
    fixed = _fixed_axes(model, lay, spec)
    transposes = sum(n.op_type == "Transpose" for n in proto.graph.node)
    layout_facts = {"source": lay, "graph_inputs": "NCHW", "graph_outputs": "NCHW",
                    "transposed": lay != "NCHW", "transpose_nodes_left": transposes,
                    "source_input_shape": _fmt(model.input_shape), "source_output_shape": _fmt(model.output_shape)}
    if fixed:
        names = spec.dynamic_axes.get(in_name, {})
        layout_facts["fixed"] = {names[a]: s for a, s in fixed.items()}
    weights = _tf_load.weights_of(model)
    facts = {"kind": "tensorflow", "format": model.format, "path": weights["path"], "layout": layout_facts,
             "converter": "tf2onnx", "opset": spec.opset, "convert_s": round(convert_s, 2),
             "load_s": round(converting - started, 2),
             "versions": {d: dist_version(d) for d in ("tensorflow-cpu", "tensorflow", "keras", "tf2onnx")
                          if dist_version(d)}}
    if model.signature:
        facts["signature"] = model.signature

    def reference(f: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        shape = f[in_name].shape
        if any(shape[a] != n for a, n in fixed.items()):
            raise UserError(f"{model.path} was saved with a fixed input size ({_fmt(model.input_shape)}), "
                            f"but the {spec.name} pipeline fed {_fmt(shape)}",
                            "re-save it with a dynamic height/width (keras.Input((None, None, 3))), or feed inputs "
                            "through TFSource.adapt")
        return tf_reference(model, f, lay, in_name, out_name)

    return TFSource(onnx_path=Path(out_path), reference=reference, weights=weights, facts=facts,
                    layout=layout_facts, model=model, fixed=fixed)


def tf_source(path, spec: ModelSpec, seed: int = 0, workdir=None, layout: str = "auto",
              custom_modules: Sequence[str] = ()) -> TFSource:
    """`from_tf` into a private temporary directory, removed when the source is garbage collected
    or the interpreter exits. `seed` is accepted for symmetry with the PyTorch route: the
    conversion is deterministic and uses none."""
    del seed
    tmp = Path(tempfile.mkdtemp(prefix="xopt-tf-", dir=workdir))
    try:
        source = from_tf(path, spec, tmp / f"{spec.name}_tf.onnx", layout=layout, custom_modules=custom_modules)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    weakref.finalize(source, shutil.rmtree, str(tmp), True)
    return source


__all__ = ["TFSource", "TFModel", "from_tf", "tf_source", "tf_reference", "detect_layout", "load",
           "savedmodel_sha256"]
