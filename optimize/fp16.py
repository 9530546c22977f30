"""FP16 conversion with FP32 I/O and FP32 islands declared by the model spec."""
from __future__ import annotations

from pathlib import Path

from xopt.extras import require
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
        Option("fp32_prologue", "bool", False, "keep in FP32 the nodes computed from the graph inputs before the "
               "first Conv/ConvTranspose/MatMul/Gemm (in-graph input statistics: their element counts overflow FP16)"),
    ])

    def apply(self, src: Path, dst: Path, opts, ctx) -> dict:
        import onnx
        float16 = require("onnxconverter_common.float16", "export", "the fp16 pass")

        from xopt.optimize.scopes import nodes_in_scopes

        model = onnx.load(str(src))
        ops = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(opts["op_block_list"]))
        nodes = list(opts["node_block_list"])
        if opts["scope_block_list"]:
            nodes += nodes_in_scopes(model, opts["scope_block_list"], ctx.scopes)
        if opts["fp32_prologue"]:
            nodes += prologue_nodes(model)
        unshared = unshare_initializers(model, lambda n: n.op_type in ops or n.name in nodes)
        pristine = onnx.ModelProto()
        pristine.CopyFrom(model)
        facts: dict = {}
        try:
            converted = float16.convert_float_to_float16(
                model, keep_io_types=opts["keep_io_types"], op_block_list=ops, node_block_list=nodes,
                max_finite_val=opts["max_finite_val"], disable_shape_infer=False)
        except AttributeError as exc:
            # onnxconverter-common's last clean-up (dropping Cast16->Cast32 pairs) fails when the
            # second Cast feeds several nodes ("'list' object has no attribute 'input'"), which
            # FP32 islands inside a block produce. The conversion before it is complete: redo it
            # with the clean-up skipped; the pairs left are exact round trips, a little slower.
            if "'list' object has no attribute 'input'" not in str(exc):
                raise
            cleanup = float16.remove_unnecessary_cast_node
            float16.remove_unnecessary_cast_node = lambda graph: None
            try:
                converted = float16.convert_float_to_float16(
                    pristine, keep_io_types=opts["keep_io_types"], op_block_list=ops, node_block_list=nodes,
                    max_finite_val=opts["max_finite_val"], disable_shape_infer=False)
            finally:
                float16.remove_unnecessary_cast_node = cleanup
            facts["cast_cleanup"] = "skipped (onnxconverter-common fails on Casts that feed several nodes)"
        retyped = _casts_follow_value_info(converted, {n.name for n in pristine.graph.node if n.op_type == "Cast"})
        if retyped:
            facts["retyped_casts"] = retyped
        if opts["keep_io_types"]:
            _outputs_to_fp32(converted)
        onnx.save(converted, str(dst))
        kept = sum(1 for n in converted.graph.node if n.op_type in ops or n.name in nodes)
        return {"fp32_ops": [o for o in ops if any(n.op_type == o for n in converted.graph.node)],
                "fp32_nodes": kept, "unshared_initializers": unshared, **facts}


def _casts_follow_value_info(model, own: set[str]) -> int:
    """A graph's own Cast(to=FLOAT) nodes (`own`: not the converter's, which cast at the FP32
    boundaries on purpose): the converter retypes their outputs FP16 (its
    value_info) but leaves `to` at FLOAT, which ONNX Runtime refuses ("Type (tensor(float16)) of
    output arg ... does not match"); make `to` say what the graph now carries."""
    from onnx import TensorProto

    fp16_values = {v.name for v in model.graph.value_info if v.type.tensor_type.elem_type == TensorProto.FLOAT16}
    fp16_values -= {o.name for o in model.graph.output}
    count = 0
    for node in model.graph.node:
        if node.op_type == "Cast" and node.name in own and node.output[0] in fp16_values:
            for a in node.attribute:
                if a.name == "to" and a.i == TensorProto.FLOAT:
                    a.i = TensorProto.FLOAT16
                    count += 1
    return count


def _outputs_to_fp32(model) -> None:
    """The converter leaves a graph output FP16 when an FP32-kept node produces it; cast it back."""
    from onnx import TensorProto, helper

    for out in model.graph.output:
        if out.type.tensor_type.elem_type != TensorProto.FLOAT16:
            continue
        inner = f"{out.name}__fp16"
        for node in model.graph.node:
            node.output[:] = [inner if o == out.name else o for o in node.output]
            node.input[:] = [inner if i == out.name else i for i in node.input]
        model.graph.node.append(helper.make_node("Cast", [inner], [out.name], to=TensorProto.FLOAT,
                                                 name=f"{out.name}__to_fp32"))
        out.type.tensor_type.elem_type = TensorProto.FLOAT


def unshare_initializers(model, kept_fp32) -> int:
    """Give FP32-kept nodes their own copy of initializers they share with converted nodes.

    Exporters and onnxslim merge identical constants (all-ones scales, zero biases) into one
    initializer; the converter can type it only one way, and the graph then fails to load
    ("Conv bound to float16 and float").
    """
    users: dict[str, list] = {}
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        for name in node.input:
            if name in inits:
                users.setdefault(name, []).append(node)
    copies = 0
    for name, nodes in users.items():
        fp32 = [n for n in nodes if kept_fp32(n)]
        if not fp32 or len(fp32) == len(nodes):
            continue
        clone = type(inits[name])()
        clone.CopyFrom(inits[name])
        clone.name = f"{name}__fp32"
        model.graph.initializer.append(clone)
        for node in fp32:
            for i, inp in enumerate(node.input):
                if inp == name:
                    node.input[i] = clone.name
        copies += 1
    return copies


_HEAVY = {"Conv", "ConvTranspose", "MatMul", "Gemm"}


def prologue_nodes(model) -> list[str]:
    """Names of the nodes whose inputs all come from graph inputs, initializers, constants or
    other prologue nodes, stopping at the first heavy op (nodes are topologically sorted)."""
    known = {i.name for i in model.graph.input} | {i.name for i in model.graph.initializer} | {""}
    picked = []
    for node in model.graph.node:
        if node.op_type == "Constant":
            known.update(node.output)
        elif node.op_type not in _HEAVY and all(i in known for i in node.input):
            known.update(node.output)
            picked.append(node.name)
    return picked


register_pass(Fp16Pass())
