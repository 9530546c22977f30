"""INT8 with ONNX Runtime's quantizer: static QDQ (calibrated) and dynamic (weights only).

Defaults are the settings measured fastest on x86 CPUs (QDQ, per-channel, U8 activations,
S8 weights, MinMax calibration); TensorRT-RTX needs `quantize_bias=False` (it rejects
INT32 bias).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from xopt.errors import UserError
from xopt.optimize.base import Option, OptionSet, Pass, register_pass

_QTYPES = {"uint8": "QUInt8", "int8": "QInt8"}
_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


class _Reader:
    """ORT's CalibrationDataReader protocol over the spec's calibration feeds."""

    def __init__(self, feeds, input_names):
        self._it = iter(feeds)
        self._names = set(input_names)
        self.count = 0

    def get_next(self):
        feed = next(self._it, None)
        if feed is None:
            return None
        self.count += 1
        return {k: v for k, v in feed.items() if k in self._names}

    def rewind(self):  # pragma: no cover - ORT calls it only for some calibrators
        raise UserError("the calibration reader cannot rewind", "use the minmax calibration method")


def _preprocess(src: Path, workdir: Path) -> Path:
    from onnxruntime.quantization import quant_pre_process

    out = workdir / "preprocessed.onnx"
    # Symbolic shape inference fails on several exported graphs ("Incomplete symbolic shape
    # inference"); ONNX's own shape inference is enough for the quantizer.
    quant_pre_process(str(src), str(out), skip_symbolic_shape=True)
    return out


def _selection(model_path: Path, opts, ctx):
    import onnx

    from xopt.optimize.scopes import nodes_in_scopes

    if opts["scope"] == "all":
        return None
    model = onnx.load(str(model_path), load_external_data=False)
    return nodes_in_scopes(model, [opts["scope"]], ctx.scopes, opts["op_types"] or None)


class Int8StaticPass(Pass):
    name = "int8"
    description = "static INT8 QDQ calibrated on the spec's calibration inputs (ONNX Runtime quantizer)"
    options = OptionSet([
        Option("calib_samples", "int", 8, "number of calibration inputs"),
        Option("calibrate_method", "str", "minmax", "activation range estimator", tuple(_METHODS)),
        Option("per_channel", "bool", True, "per-output-channel weight scales"),
        Option("activation_type", "str", "uint8", "activation integer type", tuple(_QTYPES)),
        Option("weight_type", "str", "int8", "weight integer type", tuple(_QTYPES)),
        Option("scope", "str", "all", "quantize only this named scope of the spec (e.g. backbone)"),
        Option("op_types", "list", [], "op types to quantize (empty: ONNX Runtime's default set)"),
        Option("nodes_to_exclude", "list", [], "node names kept in FP32"),
        Option("quantize_bias", "bool", True, "quantize bias to INT32 (TensorRT and TensorRT-RTX need false)"),
        Option("symmetric", "bool", False, "symmetric activations and weights, zero point 0 (TensorRT needs true "
               "with activation_type int8)"),
        Option("preprocess", "bool", True, "run ONNX Runtime's quantization pre-processing first"),
        Option("reduce_range", "bool", False, "7-bit weights: no u8s8 saturation on x86 CPUs without VNNI "
               "(AVX2), at a little precision on those with it"),
    ])

    def apply(self, src: Path, dst: Path, opts, ctx) -> dict:
        import onnx
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        if ctx.calibration is None:
            raise UserError(f"model {ctx.model} provides no calibration data", "use a dynamic INT8 variant")
        with tempfile.TemporaryDirectory(dir=ctx.workdir) as tmp:
            model_in = _preprocess(src, Path(tmp)) if opts["preprocess"] else src
            inputs = [i.name for i in onnx.load(str(model_in), load_external_data=False).graph.input]
            reader = _Reader(ctx.calibration(opts["calib_samples"]), inputs)
            nodes = _selection(model_in, opts, ctx)
            quantize_static(
                str(model_in), str(dst), reader, quant_format=QuantFormat.QDQ, per_channel=opts["per_channel"],
                activation_type=getattr(QuantType, _QTYPES[opts["activation_type"]]),
                weight_type=getattr(QuantType, _QTYPES[opts["weight_type"]]),
                calibrate_method=getattr(CalibrationMethod, _METHODS[opts["calibrate_method"]]),
                op_types_to_quantize=opts["op_types"] or None, nodes_to_quantize=nodes,
                nodes_to_exclude=opts["nodes_to_exclude"] or None, reduce_range=opts["reduce_range"],
                extra_options={"QuantizeBias": opts["quantize_bias"], "ActivationSymmetric": opts["symmetric"],
                               "WeightSymmetric": opts["symmetric"] or opts["weight_type"] == "int8"},
            )
        return {"calibration_samples": reader.count, "quantized_nodes": _count_qdq(dst)}


class Int8DynamicPass(Pass):
    name = "int8-dynamic"
    description = "dynamic INT8 (weights quantized offline, activations at run time; no calibration)"
    options = OptionSet([
        Option("op_types", "list", ["MatMul", "Gemm"], "op types to quantize"),
        Option("per_channel", "bool", False, "per-channel weight scales"),
        Option("weight_type", "str", "int8", "weight integer type", tuple(_QTYPES)),
        Option("nodes_to_exclude", "list", [], "node names kept in FP32"),
        Option("reduce_range", "bool", False, "7-bit weights: no u8s8 saturation on x86 CPUs without VNNI "
               "(AVX2), at a little precision on those with it"),
    ])

    def apply(self, src: Path, dst: Path, opts, ctx) -> dict:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        opts = self.options.resolve(opts)
        quantize_dynamic(str(src), str(dst), op_types_to_quantize=opts["op_types"], per_channel=opts["per_channel"],
                         weight_type=getattr(QuantType, _QTYPES[opts["weight_type"]]),
                         nodes_to_exclude=opts["nodes_to_exclude"] or None, reduce_range=opts["reduce_range"])
        return {"quantized_nodes": _count_qdq(dst)}


def _count_qdq(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return sum(1 for n in model.graph.node if n.op_type in ("QuantizeLinear", "DynamicQuantizeLinear",
                                                            "MatMulInteger", "ConvInteger", "QLinearMatMul"))


register_pass(Int8StaticPass())
register_pass(Int8DynamicPass())
