"""What the engine builder needs to know about an ONNX graph before TensorRT sees it:
its precision (FP16 tensors, Q/DQ nodes), quantization TensorRT rejects, and its
inputs' dimensions. Read with `onnx` only, so problems become a UserError that names
the fix instead of a parser log.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from xopt.errors import UserError

_INT8_FIX = ("re-quantize for TensorRT with the int8 pass options quantize_bias=false, activation_type=int8 "
             "and symmetric activations (TensorRT takes symmetric INT8 Q/DQ only)")


@dataclass
class GraphFacts:
    inputs: dict[str, list] = field(default_factory=dict)  # name -> dims (int, or str for a dynamic axis)
    outputs: list[str] = field(default_factory=list)
    has_qdq: bool = False
    has_fp16: bool = False
    int32_dequantize: list[str] = field(default_factory=list)  # DQ nodes fed INT32 (ORT's quantized bias)
    asymmetric: list[str] = field(default_factory=list)  # Q/DQ nodes with a non-zero or UINT8 zero point
    opset: int = 0

    def natural_precision(self) -> str:
        if self.has_qdq:
            return "int8"
        return "fp16" if self.has_fp16 else "fp32"

    def check_int8_for_tensorrt(self, path) -> None:
        problems = []
        if self.int32_dequantize:
            problems.append(f"{len(self.int32_dequantize)} DequantizeLinear node(s) take INT32 input "
                            f"(quantized bias, e.g. {self.int32_dequantize[0]})")
        if self.asymmetric:
            problems.append(f"{len(self.asymmetric)} Q/DQ node(s) use a non-zero or UINT8 zero point "
                            f"(asymmetric quantization, e.g. {self.asymmetric[0]})")
        if problems:
            raise UserError(f"{Path(path).name} has INT8 quantization TensorRT rejects: {'; '.join(problems)}",
                            _INT8_FIX)


def read(path: str | Path) -> GraphFacts:
    import numpy as np
    import onnx
    from onnx import TensorProto, numpy_helper

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError / OSError variants
        raise UserError(f"cannot read ONNX {path} ({exc})", "pass the path of an ONNX file xopt exported") from exc
    g = model.graph
    init_names = {i.name for i in g.initializer}
    facts = GraphFacts(outputs=[o.name for o in g.output])
    facts.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    for inp in g.input:
        if inp.name in init_names:
            continue
        dims = inp.type.tensor_type.shape.dim
        facts.inputs[inp.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
    elem = {i.name: i.data_type for i in g.initializer}
    consts = {i.name: i for i in g.initializer}
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        elem.setdefault(vi.name, vi.type.tensor_type.elem_type)
    facts.has_fp16 = any(t == TensorProto.FLOAT16 for t in elem.values())
    for node in g.node:
        if node.op_type == "Cast" and any(a.name == "to" and a.i == TensorProto.FLOAT16 for a in node.attribute):
            facts.has_fp16 = True
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        facts.has_qdq = True
        if node.op_type == "DequantizeLinear" and elem.get(node.input[0]) == TensorProto.INT32:
            facts.int32_dequantize.append(node.name or node.output[0])
        if len(node.input) > 2 and node.input[2]:
            zp = consts.get(node.input[2])
            if zp is not None and (zp.data_type == TensorProto.UINT8 or np.any(numpy_helper.to_array(zp) != 0)):
                facts.asymmetric.append(node.name or node.output[0])
    return facts


def dynamic_axes(facts: GraphFacts) -> dict[str, list[int]]:
    return {n: [i for i, d in enumerate(dims) if not isinstance(d, int) or d <= 0] for n, dims in facts.inputs.items()
            if any(not isinstance(d, int) or d <= 0 for d in dims)}
