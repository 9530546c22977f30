"""MODNet portrait matting: the spec. Torch-free at import; the network lives in
`net`, its weights in `weights`, the numpy side in `xopt.models.modnet.pipeline`.
"""
from __future__ import annotations

import numpy as np

from xopt.registry import register
from xopt.models.modnet.pipeline import calibration_feeds, drift, perturb, profile_inputs
from xopt.spec import EvalHooks
from xopt.spec import BenchTargets, Built, DriftGate, EngineHooks, FitHooks, ModelSpec, ShapeFlag, Tolerance, Variant

EXAMPLE_SIZE = (256, 256)  # traced shape
# INT8 MinMax ranges measured at 256x256 gave the same drift at 512x512 as ranges taken at
# 512x512 (matte MAE 0.061 vs 0.057), for a quarter of the calibration memory (8 feeds at
# 512x512 peaked at 2.4 GB RSS in ONNX Runtime's calibrator).
CALIBRATION_SIZE = (256, 256)

_SLIM = ("slim", {})
# Resize: onnxconverter-common emits FP16 scales ORT rejects. InstanceNormalization: the
# variance over a whole 512x512 plane overflows FP16 on GPUs.
_FP16 = ("fp16", {"op_block_list": ["Resize", "InstanceNormalization"], "keep_io_types": True})
# reduce_range (7-bit weights): on an AVX2 CPU without VNNI ONNX Runtime's u8s8 QLinearConv
# saturates; seeded-random MODNet, AMD EPYC AVX2: INT8 matte mean_abs 0.124 with 8-bit weights
# (over the 0.1 bound), 0.071 with 7-bit ones
_INT8 = {"per_channel": True, "activation_type": "uint8", "weight_type": "int8", "calibrate_method": "minmax",
         "reduce_range": True}
# The gate measures at the device profile's size (512x512 by default, as `xopt profile` does);
# ranges come from CALIBRATION_SIZE inputs, streamed (calibration.py)
# (op types: ONNX Runtime's QDQ set for this graph, which keeps activations INT8 between the
# convolutions; models/modnet/quant.py has the measurements and the nodes kept FP32 for speed)
_INT8_GATED = {"op_types": ["Conv", "Add", "Concat", "Mul", "MatMul", "Sigmoid", "GlobalAveragePool", "Resize"],
               "reduce_range": True, "calib_samples": 8, "gate_samples": 2, "named_groups_only": True}

# Parity bounds on the matte (values in [0, 1]) against PyTorch FP32. Measured on the
# seeded-random weights at the validation shapes (ORT CPU): FP32 max_abs 1.7e-5; FP16
# max_abs 0.033 / mean_abs 0.0031; INT8 mean_abs 0.056 (max_abs 0.40), backbone-only INT8
# the same (the error enters in the first stages and the branches amplify it). Bounds sit at
# 2-6x those, so a broken artifact (wrong islands, garbage ranges: mean_abs >= 0.2) fails
# while a real checkpoint's different numbers still pass. A single pixel may legitimately
# move far at INT8 (an edge crossing), so INT8 is bounded in mean terms only.
VARIANTS = {
    "fp32": Variant("fp32", "fp32", passes=(_SLIM,), tolerance=Tolerance(max_abs=1e-4),
                    description="FP32 after onnxslim (same numbers as the baseline up to float reordering)"),
    "fp16": Variant("fp16", "fp16", passes=(_SLIM, _FP16), tolerance=Tolerance(max_abs=0.15, mean_abs=0.01),
                    description="FP16 weights/activations; Resize and InstanceNorm kept FP32; FP32 I/O"),
    "int8": Variant("int8", "int8", passes=(_SLIM, ("int8-gated", dict(_INT8_GATED))), tolerance=Tolerance(mean_abs=0.1),
                    description="static INT8 QDQ behind the matte-MAE gate: the backbone stages and branch blocks "
                                "whose INT8 error moves the matte most stay FP32; calibration method chosen by the gate"),
    "int8-all": Variant("int8-all", "int8", passes=(_SLIM, ("int8", dict(_INT8))), tolerance=Tolerance(mean_abs=0.1),
                        description="static INT8 QDQ everywhere, per-channel S8 weights, U8 activations, MinMax"),
    "int8-backbone": Variant("int8-backbone", "int8", passes=(_SLIM, ("int8", {**_INT8, "scope": "backbone"})),
                             tolerance=Tolerance(mean_abs=0.1),
                             description="INT8 QDQ in the MobileNetV2 backbone only; branches stay FP32"),
    # TensorRT takes only symmetric Q/DQ (zero point 0) and no INT32 bias.
    "int8-trt": Variant("int8-trt", "int8",
                        passes=(_SLIM, ("int8", {**_INT8, "activation_type": "int8", "symmetric": True,
                                                 "quantize_bias": False, "reduce_range": False})),
                        tolerance=Tolerance(mean_abs=0.1),
                        description="INT8 QDQ for TensorRT engines: symmetric S8 activations and weights, FP32 bias"),
}


def build(checkpoint=None, config=None, seed: int = 0) -> Built:
    from xopt.models.modnet import weights
    from xopt.models.modnet.net import MODNet

    if checkpoint is not None:
        module = MODNet()
        provenance = weights.load_checkpoint(module, checkpoint)
    else:
        module, provenance = weights.seeded(seed)
    module.eval()
    return Built(module=module, weights=provenance, config=dict(config or {"preset": "default"}))


def example_inputs(built: Built) -> dict:
    return calibration_feeds(1, EXAMPLE_SIZE)[0]


def validation_inputs(built: Built) -> list[dict]:
    """A batch of two at the traced size, and a single portrait-oriented 320x192 (H x W)
    that the trace never saw: a graph that baked in the traced shape fails here."""
    pair = calibration_feeds(3, EXAMPLE_SIZE)[1:]
    return [{"input": np.concatenate([f["input"] for f in pair])},
            calibration_feeds(4, (320, 192))[3]]


def calibration_inputs(built: Built, n: int) -> list[dict]:
    return calibration_feeds(n, CALIBRATION_SIZE)


def engine_shapes(targets) -> dict:
    """TensorRT optimisation profile from the device profile's (batch, height, width) shapes."""
    def nchw(key, default):
        b, h, w = targets.get(key, default)
        return (int(b), 3, int(h), int(w))

    return {"input": (nchw("min_shape", (1, 256, 256)), nchw("opt_shape", (1, 512, 512)),
                      nchw("max_shape", (1, 1088, 1920)))}


def describe_inputs(targets, shapes) -> dict:
    _, _, h, w = shapes["input"]
    return {"text": f"{h}x{w} (height x width)", "height": h, "width": w}


def shrink(targets) -> dict | None:
    """Half the height and width (multiples of 32 stay multiples of 32) down to 64x64."""
    h, w = int(targets.get("height", 512)), int(targets.get("width", 512))
    if min(h, w) <= 64:
        return None
    return {**targets, "height": max(64, h // 2 // 32 * 32), "width": max(64, w // 2 // 32 * 32)}


SPEC = register(ModelSpec(
    name="modnet",
    task="matting",
    build=build,
    input_names=["input"],
    output_names=["output"],
    dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"}, "output": {0: "batch", 2: "height", 3: "width"}},
    example_inputs=example_inputs,
    validation_inputs=validation_inputs,
    variants=VARIANTS,
    calibration_inputs=calibration_inputs,
    drift=drift,
    perturb=perturb,
    profile_inputs=profile_inputs,
    pipeline="xopt.models.modnet.pipeline:MattingPipeline",
    opset=17,
    exporter="legacy",
    configs={"default": {}},
    covers="whole model (inference graph: normalised RGB in, alpha matte out)",
    scopes={"backbone": ["/lr_branch/backbone/"]},
    drift_keys=("iou", "sad", "mse", "mae", "grad"),
    higher_is_better=("iou",),
    # matte MAE within 3x the FP32 model's own MAE under +-1 grey level of input noise
    gate=DriftGate("mae", higher_is_better=False, noise_multiple=3.0),
    shape_flags=(ShapeFlag("height", "height", int, "input height in pixels (a multiple of 32)"),
                 ShapeFlag("width", "width", int, "input width in pixels (a multiple of 32)")),
    describe_inputs=describe_inputs,
    previews="xopt.models.modnet.preview:previews",
    drift_units={"iou": "foreground overlap, 0–1", "sad": "sum of |Δalpha| / 1000", "mse": "alpha², alpha on 0–1",
                 "mae": "alpha, 0–1", "grad": "sum of squared gradient differences / 1000"},
    # TensorRT takes only symmetric Q/DQ and no INT32 bias: `--engine --int8` builds int8-trt
    engine=EngineHooks(shapes=engine_shapes, int8_variant="int8-trt"),
    # xopt fit: the largest inference resolution per variant within the device budget
    fit=FitHooks(search="xopt.models.modnet.budget:fit_to_budget"),
    shrink=shrink,
    precision_group="xopt.models.modnet.precision:group",
    fp32_nodes="xopt.models.modnet.quant:fp32_nodes",
    # xopt eval: matting benchmarks' errors and mask IoU; label-free coverage and video flicker checks
    evaluation=EvalHooks(
        dataset="xopt.models.modnet.eval_data:read_dataset", predict="xopt.models.modnet.evaluate:predict",
        score="xopt.models.modnet.evaluate:score", aggregate="xopt.models.modnet.evaluate:aggregate",
        prediction_paths="xopt.models.modnet.evaluate:prediction_paths",
        read_prediction="xopt.models.modnet.evaluate:read_prediction",
        item_checks="xopt.models.modnet.evaluate:item_checks", checks="xopt.models.modnet.checks:checks",
        run_checks="xopt.models.modnet.checks:run_checks",
        metrics={"iou": "higher", "sad": "lower", "mse": "lower", "mad": "lower", "grad": "lower",
                 "conn": "lower", "dtssd": "lower"},
        options={"images": "folder of input images (P3M-10k / AM-2k style; with --mattes)",
                 "mattes": "folder of reference mattes or masks, paired with --images by file stem",
                 "trimaps": "folder of trimaps (0/128/255): errors over the unknown band, not the whole image"}),
    # ORT FP32 >= 1.5x torch eager; INT8 >= 2x ORT FP32 (its drift judged by the gate below)
    bench=BenchTargets(vs_torch={"fp32": 1.5}, vs_fp32={"int8": 2.0}, drift_key="mae"),
))
