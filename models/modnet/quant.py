"""MODNet static INT8 for ONNX Runtime's CPU EP: the quantizer settings and the nodes kept FP32.

Measured on an AMD EPYC with AVX2 and no VNNI, 2 ORT threads, 512x512, batch 1,
ORT_ENABLE_ALL, onnxruntime 1.32, seeded-random weights; medians of interleaved rounds
against ORT FP32 of the same slimmed graph in the same rounds (a study script of the time,
not kept in the tree). Today's settings alone: x1.57 on a
quiet machine (FP32 441 ms, INT8 280 ms); the type/format comparisons below come from one
set of rounds on a machine shared with other jobs (FP32 1300 ms there), so only their
ordering is solid. Per-node figures are from one ORT profile (relative: profiling inflates
the totals). The end-to-end gain of `fp32_nodes` had not been timed on a quiet machine at
the time of writing (in that study); what it removes is counted from ORT's optimized graph.

What ORT runs: with QDQ, U8 activations and S8 weights every Conv becomes a
com.microsoft QLinearConv (NHWC, a Transpose pair around each chain), Add/Concat/Mul/
MatMul/Sigmoid/GlobalAveragePool become QLinear* kernels. Nothing fuses BatchNormalization
and InstanceNormalization: each IBNorm block (Conv -> two channel halves -> BN | IN ->
Concat -> ReLU) is DequantizeLinear -> Split -> BN/IN -> QuantizeLinear -> QLinearConcat,
i.e. two DQ and two Q passes over every branch activation.

Torch-free and ORT-free at import: `onnx` and `onnxruntime` load inside the functions.
"""
from __future__ import annotations

# ---------------------------------------------------------------- quantizer settings
#
# Format QDQ: QOperator gives the same kernels (69 QLinearConv either way) and measured no
# faster (x1.21 vs QDQ x1.24, same contended rounds); QDQ is what the int8 pass already emits.
# U8 activations, S8 weights: U8U8 runs ORT's 16-bit-multiply kernel path on AVX2 without
# VNNI: x0.96-1.00 (slower than FP32) against U8S8 x1.20-1.26 in the same rounds; S8S8
# leaves half the convs unfused on x86 (35 Conv + 34 QLinearConv, 335 DequantizeLinear):
# x0.52. QOperator U8U8: x0.32.
# reduce_range (7-bit weights): no speed cost (u8s8 x1.20 without, x1.24 with: within the
# noise), and on AVX2 without VNNI it avoids pmaddubsw's int16 saturation (matte MAE 0.124
# with 8-bit weights vs 0.071 with 7-bit, see models/modnet/__init__.py).
# per_channel: per-tensor weights x1.26 vs per-channel x1.24 (noise) at a higher drift;
# per-channel kept.
# ActivationSymmetric: forces zero point 128 on post-ReLU tensors, so ReLU/Clip can no longer
# be folded into the quantization and stay as float ops with Q/DQ around them (157 DQ vs
# 105): x0.99, rejected.
# DedicatedQDQPair, ForceQuantizeNoInputCheck: the same optimized graph as the default
# (op counts identical), so no speed difference; left at their defaults.
QUANTIZE_STATIC = {
    "quant_format": "QDQ",
    "activation_type": "uint8",
    "weight_type": "int8",
    "per_channel": True,
    "reduce_range": True,
    "calibrate_method": "minmax",
    # None: ORT's default op set (Conv, Add, Concat, Mul, MatMul, Resize, Sigmoid, ...);
    # Conv-only leaves Concat/ReLU in float with Q/DQ at every block boundary: x1.19 vs x1.24.
    "op_types_to_quantize": None,
    "extra_options": {"WeightSymmetric": True, "ActivationSymmetric": False, "QuantizeBias": True},
}

# Which groups `fp32_nodes` keeps in FP32 (see the functions below for the measurements).
KEEP_IBNORM_FP32 = True
KEEP_FULL_RES_TAIL_FP32 = True


def _graph_maps(model):
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            if i:
                consumers.setdefault(i, []).append(n)
    return producer, consumers


def ibnorm_nodes(model) -> list[str]:
    """Every IBNorm block's inside: the channel-half Slice/Split nodes after the Conv, the
    BatchNormalization and InstanceNormalization on the halves, their Concat and the ReLU.

    WHY FP32: ORT has no quantized BN/IN kernel, so quantizing the block's Slice/Concat/ReLU
    only adds conversions: 2 DequantizeLinear + 2 QuantizeLinear + a QLinearConcat per block
    (16 blocks from 1/32 up to full resolution, the HR ones at 256x256x32). Kept FP32 the block
    costs one DQ after the QLinearConv and one Q before the next (DequantizeLinear 105 -> 36,
    QuantizeLinear 41 -> 20 in ORT's optimized graph).
    """
    producer, consumers = _graph_maps(model)
    names: list[str] = []
    for inorm in (n for n in model.graph.node if n.op_type == "InstanceNormalization"):
        half = producer.get(inorm.input[0])
        if half is None or half.op_type not in ("Slice", "Split"):
            continue
        conv = producer.get(half.input[0])
        if conv is None or conv.op_type != "Conv":
            continue
        halves = [c for c in consumers.get(conv.output[0], []) if c.op_type in ("Slice", "Split")]
        norms = [c for h in halves for o in h.output for c in consumers.get(o, [])
                 if c.op_type in ("BatchNormalization", "InstanceNormalization")]
        cats = {c.name: c for nrm in norms for c in consumers.get(nrm.output[0], []) if c.op_type == "Concat"}
        relus = [c for cat in cats.values() for c in consumers.get(cat.output[0], []) if c.op_type == "Relu"]
        names += [n.name for n in halves + norms + list(cats.values()) + relus]
    return list(dict.fromkeys(names))


def full_res_tail(model) -> list[str]:
    """The full-resolution fusion tail: the Concat that takes the raw image (a graph input),
    the Resize(s) feeding it and everything after it (conv_f: 35 -> 16 3x3 conv at the input
    size, its IBNorm, the 16 -> 1 conv, the Sigmoid).

    WHY FP32: its 3x3 conv is the single heaviest node and INT8 barely helps it: 76 ms as
    QLinearConv vs 85 ms FP32 in the same ORT profile (512x512; the other big convs gain
    1.7-5x, e.g. conv_hr2x.0 116 -> 23 ms; M=262144 pixels, N=16 output channels,
    K=315: few output channels per pixel, the NHWC im2col and requantization dominate), while
    quantizing it costs a QuantizeLinear of the 512x512 Resize output (6 ms), a QLinearConcat
    with the image, two Transposes at 512x512x35/16 (5 ms) and the Q/DQ around its IBNorm
    (~9 ms); the raw image also needs no 8-bit round trip (the matte's edges come from it).
    """
    producer, consumers = _graph_maps(model)
    inputs = {i.name for i in model.graph.input}
    inits = {i.name for i in model.graph.initializer}
    seeds = [n for n in model.graph.node if n.op_type == "Concat" and any(i in inputs for i in n.input)]
    names: list[str] = []
    seen: set[str] = set()
    stack = list(seeds)
    while stack:
        node = stack.pop()
        if node.name in seen:
            continue
        seen.add(node.name)
        names.append(node.name)
        for o in node.output:
            stack.extend(consumers.get(o, []))
    for cat in seeds:
        for i in cat.input:
            src = producer.get(i)
            if src is not None and src.op_type == "Resize" and i not in inits:
                names.append(src.name)
    return list(dict.fromkeys(names))


def fp32_nodes(model) -> list[str]:
    """Node names that should never be quantized for speed/correctness on ORT's CPU EP."""
    names: list[str] = []
    if KEEP_IBNORM_FP32:
        names += ibnorm_nodes(model)
    if KEEP_FULL_RES_TAIL_FP32:
        names += full_res_tail(model)
    return list(dict.fromkeys(names))


def quantize_static_kwargs(model) -> dict:
    """`QUANTIZE_STATIC` as onnxruntime.quantization.quantize_static keyword arguments, with
    `nodes_to_exclude=fp32_nodes(model)` (pass the model the quantizer will read: names must
    match, e.g. after ORT's quantization pre-processing)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    q = QUANTIZE_STATIC
    return {
        "quant_format": getattr(QuantFormat, q["quant_format"]),
        "activation_type": types[q["activation_type"]],
        "weight_type": types[q["weight_type"]],
        "per_channel": q["per_channel"],
        "reduce_range": q["reduce_range"],
        "calibrate_method": methods[q["calibrate_method"]],
        "op_types_to_quantize": q["op_types_to_quantize"],
        "extra_options": dict(q["extra_options"]),
        "nodes_to_exclude": fp32_nodes(model),
    }
