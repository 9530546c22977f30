"""Tiny ONNX graphs for tests and self-checks of the engine and interop paths: a two-conv
net with dynamic batch/height/width, its FP16 form and its INT8 Q/DQ forms. Built with
`onnx.helper` (no torch), so they take milliseconds.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

INPUT, OUTPUT = "x", "y"
TINY_SHAPES = {INPUT: ((1, 3, 16, 16), (1, 3, 32, 32), (2, 3, 64, 64))}


def tiny_conv_onnx(path, fp16: bool = False, seed: int = 0) -> Path:
    """Conv3x3(3->8)+ReLU -> Conv1x1(8->1) -> Sigmoid; input x[N,3,H,W] -> y[N,1,H,W].

    `fp16=True` stores weights in FP16 and casts inside, keeping FP32 I/O (like the fp16 pass).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    wdt = np.float16 if fp16 else np.float32
    inits = [numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(wdt), "w1"),
             numpy_helper.from_array((rng.standard_normal(8) * 0.1).astype(wdt), "b1"),
             numpy_helper.from_array((rng.standard_normal((1, 8, 1, 1)) * 0.3).astype(wdt), "w2")]
    nodes, src = [], INPUT
    if fp16:
        nodes.append(helper.make_node("Cast", [INPUT], ["x16"], to=TensorProto.FLOAT16, name="cast_in"))
        src = "x16"
    nodes += [helper.make_node("Conv", [src, "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
              helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
              helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
              helper.make_node("Sigmoid", ["c2"], ["s" if fp16 else OUTPUT], name="sigmoid")]
    if fp16:
        nodes.append(helper.make_node("Cast", ["s"], [OUTPUT], to=TensorProto.FLOAT, name="cast_out"))
    graph = helper.make_graph(
        nodes, "xopt_tiny_conv",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", 1, "H", "W"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="xopt.testing")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def tiny_feeds(n: int = 2, hw: int = 32, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{INPUT: rng.random((1, 3, hw, hw), dtype=np.float32)} for _ in range(n)]


def tiny_qdq_onnx(src, dst, tensorrt_ready: bool = True, seed: int = 0) -> Path:
    """INT8 Q/DQ with ONNX Runtime's quantizer. `tensorrt_ready`: symmetric S8 activations and
    FP32 bias (what TensorRT accepts); otherwise ORT's CPU defaults (U8 activations, INT32 bias)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(tiny_feeds(4, seed=seed))

        def get_next(self):
            return next(self._it, None)

    extra = ({"QuantizeBias": False, "ActivationSymmetric": True, "WeightSymmetric": True}
             if tensorrt_ready else {})
    quantize_static(str(src), str(dst), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8 if tensorrt_ready else QuantType.QUInt8,
                    weight_type=QuantType.QInt8, extra_options=extra)
    return Path(dst)
