import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from xopt.optimize.base import PassContext, get_pass
from xopt.runtime.backends.ort import OrtSession


def _shared_initializer_graph(path):
    """Conv and InstanceNormalization both read one all-ones tensor, as merged exports do."""
    ones = numpy_helper.from_array(np.ones(4, np.float32), "ones")
    zeros = numpy_helper.from_array(np.zeros(4, np.float32), "zeros")
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 4, 1, 1)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w", "ones"], ["c"], name="conv"),
             helper.make_node("InstanceNormalization", ["c", "ones", "zeros"], ["y"], name="norm")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [ones, zeros, w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def test_fp16_keeps_islands_fp32_even_with_shared_initializers(tmp_path):
    src, dst = tmp_path / "a.onnx", tmp_path / "b.onnx"
    _shared_initializer_graph(src)
    p = get_pass("fp16")
    facts = p.apply(src, dst, p.options.resolve({"op_block_list": ["InstanceNormalization"]}), PassContext(model="t"))
    assert facts["unshared_initializers"] == 1
    model = onnx.load(dst)
    norm = next(n for n in model.graph.node if n.op_type == "InstanceNormalization")
    inits = {i.name: i for i in model.graph.initializer}
    assert inits[norm.input[1]].data_type == TensorProto.FLOAT
    assert inits["w"].data_type == TensorProto.FLOAT16
    x = np.random.default_rng(1).normal(size=(1, 4, 8, 8)).astype(np.float32)
    with OrtSession(src) as a, OrtSession(dst) as b:
        ref, out = a.run({"x": x})["y"], b.run({"x": x})["y"]
    assert out.dtype == np.float32 and np.abs(ref - out).max() < 1e-2
