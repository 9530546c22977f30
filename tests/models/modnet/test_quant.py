"""MODNet INT8 settings for ORT's CPU EP: which nodes stay FP32, and what ORT makes of the rest."""
from __future__ import annotations

import collections

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from xopt.models.modnet import quant  # noqa: E402
from xopt.models.modnet.pipeline import calibration_feeds  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A seeded-random MODNet exported at 64x64 the way the spec exports it."""
    from xopt.export.onnx_export import to_onnx
    from xopt.models.modnet.net import MODNet
    from xopt.registry import get_model

    spec = get_model("modnet")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny graph: spare the shared CI cores
    try:
        torch.manual_seed(0)
        path = tmp_path_factory.mktemp("modnet_quant") / "modnet.onnx"
        to_onnx(MODNet().eval(), calibration_feeds(1, (64, 64))[0], path, spec.input_names, spec.output_names,
                spec.dynamic_axes, spec.opset, spec.exporter)
    finally:
        torch.set_num_threads(threads)
    return path


@pytest.fixture(scope="module")
def model(exported):
    return onnx.load(str(exported))


def _by_name(model):
    return {n.name: n for n in model.graph.node}


def test_ibnorm_nodes_are_the_sixteen_blocks_insides_and_no_conv(model):
    nodes = _by_name(model)
    kinds = collections.Counter(nodes[n].op_type for n in quant.ibnorm_nodes(model))
    # MODNet has 16 IBNorm blocks: two channel halves, BN, IN, Concat, ReLU each
    assert kinds["InstanceNormalization"] == 16 and kinds["BatchNormalization"] == 16
    assert kinds["Concat"] == 16 and kinds["Relu"] == 16
    assert kinds["Slice"] + 2 * kinds["Split"] == 32
    assert set(kinds) <= {"Slice", "Split", "BatchNormalization", "InstanceNormalization", "Concat", "Relu"}
    # every InstanceNormalization of the graph is in an IBNorm block
    assert kinds["InstanceNormalization"] == sum(n.op_type == "InstanceNormalization" for n in model.graph.node)


def test_full_res_tail_starts_at_the_concat_with_the_image(model):
    nodes = _by_name(model)
    tail = quant.full_res_tail(model)
    kinds = collections.Counter(nodes[n].op_type for n in tail)
    graph_input = model.graph.input[0].name
    cats = [nodes[n] for n in tail if nodes[n].op_type == "Concat" and graph_input in nodes[n].input]
    assert len(cats) == 1
    # conv_f (3x3, 35 -> 16) and the 16 -> 1 conv, the Sigmoid that writes the output, one Resize (the
    # one feeding the image concat: the HR branch's resizes of the input stay quantizable)
    assert kinds["Conv"] == 2 and kinds["Sigmoid"] == 1 and kinds["Resize"] == 1
    assert any(model.graph.output[0].name in nodes[n].output for n in tail)
    resize = next(nodes[n] for n in tail if nodes[n].op_type == "Resize")
    assert resize.input[0] != graph_input
    # nothing upstream of the image concat besides that Resize (the backbone and branches stay INT8)
    assert not any(n.startswith("/lr_branch/") or n.startswith("/hr_branch/") for n in tail)


def test_fp32_nodes_follow_the_switches(model, monkeypatch):
    both = set(quant.fp32_nodes(model))
    assert both == set(quant.ibnorm_nodes(model)) | set(quant.full_res_tail(model))
    monkeypatch.setattr(quant, "KEEP_IBNORM_FP32", False)
    assert set(quant.fp32_nodes(model)) == set(quant.full_res_tail(model))
    monkeypatch.setattr(quant, "KEEP_FULL_RES_TAIL_FP32", False)
    assert quant.fp32_nodes(model) == []


def test_kwargs_are_ort_quantizer_arguments(model):
    from onnxruntime.quantization import QuantFormat, QuantType

    kw = quant.quantize_static_kwargs(model)
    assert kw["quant_format"] == QuantFormat.QDQ
    # U8S8: U8U8 takes the slow 16-bit path on AVX2 without VNNI, S8S8 leaves convs unfused
    assert kw["activation_type"] == QuantType.QUInt8 and kw["weight_type"] == QuantType.QInt8
    assert kw["reduce_range"] is True  # no u8s8 saturation without VNNI
    assert kw["nodes_to_exclude"] == quant.fp32_nodes(model)
    kw["extra_options"]["X"] = 1  # a copy: the module's settings stay as written
    assert "X" not in quant.QUANTIZE_STATIC["extra_options"]


class _Reader:
    def __init__(self, feeds):
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)


@pytest.fixture(scope="module")
def quantized(exported, tmp_path_factory):
    """Quantized with the module's settings (after ORT's pre-processing, as the int8 pass does) and
    the graph ORT's CPU EP actually runs, at ORT_ENABLE_ALL."""
    from onnxruntime.quantization import quant_pre_process, quantize_static

    tmp = tmp_path_factory.mktemp("modnet_int8")
    pre = tmp / "pre.onnx"
    quant_pre_process(str(exported), str(pre), skip_symbolic_shape=True)
    pre_model = onnx.load(str(pre))
    out = tmp / "int8.onnx"
    quantize_static(str(pre), str(out), _Reader(calibration_feeds(2, (64, 64))),
                    **quant.quantize_static_kwargs(pre_model))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(tmp / "optimized.onnx")
    sess = ort.InferenceSession(str(out), so, providers=["CPUExecutionProvider"])
    return pre_model, sess, onnx.load(str(tmp / "optimized.onnx"))


def test_every_conv_outside_the_fp32_set_runs_as_qlinearconv(quantized):
    pre_model, _, optimized = quantized
    keep = set(quant.fp32_nodes(pre_model))
    convs = [n for n in pre_model.graph.node if n.op_type == "Conv"]
    kinds = collections.Counter(n.op_type for n in optimized.graph.node)
    assert kinds["QLinearConv"] == sum(n.name not in keep for n in convs)
    # the float convs left are exactly the tail's two (ORT may rename them to its NCHWc form)
    assert kinds["Conv"] == sum(n.name in keep for n in convs) == 2


def test_no_conversion_pair_around_the_fp32_ops(quantized):
    _, _, optimized = quantized
    producer = {o: n for n in optimized.graph.node for o in n.output}
    consumers = collections.defaultdict(list)
    for n in optimized.graph.node:
        for i in n.input:
            consumers[i].append(n)
    norms = [n for n in optimized.graph.node if n.op_type in ("BatchNormalization", "InstanceNormalization")]
    assert len(norms) == 32
    for n in norms:
        # the input is the (dequantized) conv output (ORT may move the DQ past the channel-half
        # split), never a float tensor quantized and dequantized again on its way in ...
        up = producer[n.input[0]]
        while up.op_type in ("DequantizeLinear", "Split", "Slice", "Transpose"):
            up = producer[up.input[0]]
        assert up.op_type in ("QLinearConv", "Conv"), (n.name, up.op_type)  # Conv: the FP32 tail
        # ... and the output goes on in float to the block's Concat, not re-quantized into a QLinearConcat
        assert [c.op_type for c in consumers[n.output[0]]] == ["Concat"], n.name
    kinds = collections.Counter(n.op_type for n in optimized.graph.node)
    # the default placement: QuantizeLinear 41, QLinearConcat 22 on this graph; with the IBNorm
    # blocks and the tail in float one Q per block input remains
    assert kinds["QuantizeLinear"] <= 24
    assert kinds["QLinearConcat"] <= 6  # only the branch-level concats of quantized tensors
    print(dict(kinds))


def test_quantized_model_runs_and_gives_a_matte(quantized):
    _, sess, _ = quantized
    out = sess.run(None, calibration_feeds(1, (96, 64))[0])[0]
    assert out.shape == (1, 1, 96, 64)
    assert np.isfinite(out).all() and 0.0 <= out.min() and out.max() <= 1.0
