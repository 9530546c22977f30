"""FP16 conversion with FP32 I/O and FP32 islands declared by the model spec."""
from __future__ import annotations

from pathlib import Path

from xopt.optimize.base import Option, OptionSet, Pass, register_pass


class Fp16Pass(Pass):
    name = "fp16"
    description = "convert to FP16 with onnxconverter-common, keeping the spec's FP32 islands"
    options = OptionSet([
        Option("keep_io_types", "bool", True, "keep graph inputs/outputs FP32 so callers feed the same arrays"),
        Option("op_block_list", "list", [], "op types kept in FP32 (added to onnxconverter-common's defaults)"),
        Option("node_block_list", "list", [], "node names kept in FP32"),
        Option("scope_block_list", "list", [], "named scopes of the spec kept in FP32"),
        Option("max_finite_val", "float", 65504.0, "initializers beyond this magnitude are clamped"),
    ])

    def apply(self, src: Path, dst: Path, opts, ctx) -> dict:
        import onnx
        from onnxconverter_common import float16

        from xopt.optimize.scopes import nodes_in_scopes

        model = onnx.load(str(src))
        ops = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(opts["op_block_list"]))
        nodes = list(opts["node_block_list"])
        if opts["scope_block_list"]:
            nodes += nodes_in_scopes(model, opts["scope_block_list"], ctx.scopes)
        converted = float16.convert_float_to_float16(
            model, keep_io_types=opts["keep_io_types"], op_block_list=ops, node_block_list=nodes,
            max_finite_val=opts["max_finite_val"], disable_shape_infer=False)
        onnx.save(converted, str(dst))
        kept = sum(1 for n in converted.graph.node if n.op_type in ops or n.name in nodes)
        return {"fp32_ops": [o for o in ops if any(n.op_type == o for n in model.graph.node)],
                "fp32_nodes": kept}


register_pass(Fp16Pass())
