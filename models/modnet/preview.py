"""MODNet previews (the spec's `previews` hook): per input the photograph, the FP32 matte and
composite, and per variant its matte, the absolute difference and its composite on a
checkerboard, the way a matting user judges a matte: by its edges (hair, fingers)."""
from __future__ import annotations

import numpy as np

from xopt.previews import checkerboard, heatmap, image

DIFF_SCALE = 0.2  # alpha units at the top of the difference colour scale: a fifth of the matte's range
VISIBLE = 1.0 / 255.0  # a difference smaller than one grey level of an 8-bit matte cannot be seen


def _rgb(feed) -> np.ndarray:
    x = np.asarray(feed["input"], np.float32)[0].transpose(1, 2, 0)
    return np.clip(x * 127.5 + 127.5, 0.0, 255.0)


def _alpha(out) -> np.ndarray:
    return np.clip(np.asarray(out["output"], np.float32)[0, 0], 0.0, 1.0)


def composite(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None]
    return a * rgb + (1.0 - a) * checkerboard(*alpha.shape)


def previews(feeds, fp32_outputs, variant_outputs, out_dir) -> list[dict]:
    recs = []
    for i, (feed, ref, out) in enumerate(zip(feeds, fp32_outputs, variant_outputs)):
        rgb, a_ref, a_var = _rgb(feed), _alpha(ref), _alpha(out)
        h, w = a_ref.shape
        meta = {"input": i, "input_label": f"sample photograph, {h}x{w} (height x width) as profiled"}
        diff = np.abs(a_var.astype(np.float64) - a_ref)
        recs += [image(out_dir, f"{i}-input.png", rgb, "input", "input image", **meta),
                 image(out_dir, f"{i}-fp32-matte.png", a_ref * 255.0, "reference", "FP32 matte",
                       caption="alpha 0 (black) … 1 (white)", **meta),
                 image(out_dir, f"{i}-fp32-composite.png", composite(rgb, a_ref), "reference",
                       "FP32 composite on a checkerboard", **meta)]
        recs += [heatmap(out_dir, f"{i}-difference.png", diff, "difference", "|variant − FP32| matte",
                         lo=0.0, hi=DIFF_SCALE, unit=" alpha", scale="Inferno", reduce="max", gamma=0.5,
                         caption=(f"max {diff.max():.3g}, mean {diff.mean():.3g} alpha; "
                                  f"{(diff > VISIBLE).mean():.1%} of pixels differ by more than one grey level "
                                  f"(square-root colour scale, clipped at {DIFF_SCALE}; shrunk by block maximum)"),
                         **meta),
                 image(out_dir, f"{i}-matte.png", a_var * 255.0, "variant", "variant matte", **meta),
                 image(out_dir, f"{i}-composite.png", composite(rgb, a_var), "variant",
                       "variant composite on a checkerboard", **meta)]
    return recs
