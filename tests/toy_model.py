"""A tiny registered model for testing generic code (exporter, passes, profiler, CLI)
without the cost of a real network. It goes through the registry like any model."""
from __future__ import annotations

import numpy as np

from xopt.registry import MODELS, register
from xopt.spec import Built, ModelSpec, ShapeFlag, Tolerance, Variant, Weights


def _build(checkpoint=None, config=None, seed=0):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    width = int((config or {}).get("width", 8))
    net = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1),
                        nn.ReLU(), nn.Conv2d(width, 1, 1), nn.Sigmoid()).eval()
    if checkpoint:
        net.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
        return Built(net, Weights("checkpoint", path=str(checkpoint)), dict(config or {}))
    return Built(net, Weights("seeded-random", seed=seed), dict(config or {}))


def _feed(h, w, batch=1, seed=0):
    rng = np.random.default_rng(seed)
    return {"input": rng.uniform(-1, 1, (batch, 3, h, w)).astype(np.float32)}


def _drift(ref, out, feed):
    a, b = ref["output"], out["output"]
    return {"mae": float(np.abs(a - b).mean()), "iou": float(((a > .5) & (b > .5)).sum() / max(1, ((a > .5) | (b > .5)).sum()))}


TOY = ModelSpec(
    name="toy", task="testing", build=_build,
    input_names=["input"], output_names=["output"],
    dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"}, "output": {0: "batch", 2: "height", 3: "width"}},
    example_inputs=lambda built: _feed(16, 16),
    validation_inputs=lambda built: [_feed(16, 16, seed=1), _feed(24, 8, batch=2, seed=2)],
    variants={
        # sigmoid output in [0, 1]: an absolute bound is already scale-relative (ORT 1.32: max_abs 6e-8)
        "fp32": Variant("fp32", "fp32", (("slim", {}),), Tolerance(max_abs=1e-5)),
        "fp16": Variant("fp16", "fp16", (("fp16", {}),), Tolerance(max_abs=5e-3)),
        "int8": Variant("int8", "int8", (("int8", {"calib_samples": 4}),), Tolerance(mean_abs=0.05)),
        "strict16": Variant("strict16", "fp16", (("fp16", {}),), Tolerance(max_abs=1e-9)),
    },
    calibration_inputs=lambda built, n: [_feed(16, 16, seed=10 + i) for i in range(n)],
    drift=_drift, perturb=lambda feed, rng: {"input": feed["input"] + rng.choice([-1, 1], feed["input"].shape).astype(np.float32) / 127.5},
    profile_inputs=lambda targets, n, seed: [_feed(targets.get("height", 32), targets.get("width", 32), seed=seed + i)
                                             for i in range(n)],
    shrink=lambda t: None if t.get("height", 32) <= 64 else {**t, "height": t["height"] // 2, "width": t["width"] // 2},
    configs={"default": {"width": 8}, "wide": {"width": 16}}, drift_keys=("mae", "iou"),
    higher_is_better=("iou",),
    shape_flags=(ShapeFlag("height", "height", int, "input height"), ShapeFlag("width", "width", int, "input width")),
)


def ensure_registered() -> ModelSpec:
    if "toy" not in MODELS.items:
        register(TOY)
    return TOY
