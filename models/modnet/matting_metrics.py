"""Matting errors as the matting benchmarks define them, and mask IoU (numpy, scipy, scikit-image).

SAD, MSE, gradient and connectivity errors follow the evaluation code of Deep Image Matting
(Xu et al. 2017; the alphamatting.com definitions of Rhemann et al. 2009) that P3M-10k, AM-2k
and later papers reuse: alpha on [0, 1]; the errors are summed (SAD, gradient, connectivity,
each divided by 1000) or averaged (MSE) over the trimap's unknown region, or over the whole
image when there is no trimap (P3M's and AM-2k's "whole image" numbers, MODNet's PPM-100).

dtSSD (Erofeev et al. 2015, as video-matting papers report it): per pair of consecutive
frames, the root mean square of the difference between the predicted and the reference
temporal derivatives of alpha.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

GRAD_SIGMA = 1.4
CONN_STEP = 0.1
CONN_THETA = 0.15  # connectivity: a pixel is disconnected once it sits 0.15 above its level
IOU_THRESHOLD = 0.5
UNKNOWN = 128  # trimap value of the unknown band


def _region(shape, trimap) -> np.ndarray:
    if trimap is None:
        return np.ones(shape, bool)
    trimap = np.asarray(trimap)
    if trimap.shape != tuple(shape):
        raise ValueError(f"trimap shape {trimap.shape} differs from the matte's {tuple(shape)}")
    return trimap == UNKNOWN


def _pair(pred, ref):
    pred = np.asarray(pred, np.float64)
    ref = np.asarray(ref, np.float64)
    if pred.shape != ref.shape or pred.ndim != 2:
        raise ValueError(f"mattes must be matching H x W arrays, got {pred.shape} and {ref.shape}")
    return pred, ref


def sad(pred, ref, trimap=None) -> float:
    """Sum of absolute differences over the region, / 1000 (the benchmarks' unit)."""
    pred, ref = _pair(pred, ref)
    return float(np.abs(pred - ref)[_region(ref.shape, trimap)].sum() / 1000.0)


def mse(pred, ref, trimap=None) -> float:
    """Mean squared error over the region."""
    pred, ref = _pair(pred, ref)
    region = _region(ref.shape, trimap)
    return float(((pred - ref) ** 2)[region].sum() / max(int(region.sum()), 1))


def mad(pred, ref, trimap=None) -> float:
    """Mean absolute difference over the region (MODNet's and P3M's MAD)."""
    pred, ref = _pair(pred, ref)
    region = _region(ref.shape, trimap)
    return float(np.abs(pred - ref)[region].sum() / max(int(region.sum()), 1))


@lru_cache(maxsize=4)
def _gauss_gradient_kernel(sigma: float) -> np.ndarray:
    """The benchmark's first-derivative-of-Gaussian kernel (x direction), unit L2 norm, with the
    half size at which the Gaussian falls to 1 % of its peak density."""
    eps = 1e-2
    half = int(np.ceil(sigma * np.sqrt(-2.0 * np.log(np.sqrt(2.0 * np.pi) * sigma * eps))))
    u = np.arange(-half, half + 1, dtype=np.float64)
    gauss = np.exp(-u ** 2 / (2 * sigma ** 2)) / (sigma * np.sqrt(2 * np.pi))
    dgauss = -u * gauss / sigma ** 2
    kernel = np.outer(gauss, dgauss)  # rows: smoothing (y), columns: derivative (x)
    return kernel / np.sqrt(np.sum(kernel ** 2))


def gradient_amplitude(alpha, sigma: float = GRAD_SIGMA) -> np.ndarray:
    from scipy.ndimage import convolve

    kx = _gauss_gradient_kernel(sigma)
    a = np.asarray(alpha, np.float64)
    gx = convolve(a, kx, mode="nearest")
    gy = convolve(a, kx.T, mode="nearest")
    return np.hypot(gx, gy)


def gradient_error(pred, ref, trimap=None, sigma: float = GRAD_SIGMA) -> float:
    """Sum over the region of the squared difference of gradient amplitudes, / 1000."""
    pred, ref = _pair(pred, ref)
    err = (gradient_amplitude(pred, sigma) - gradient_amplitude(ref, sigma)) ** 2
    return float(err[_region(ref.shape, trimap)].sum() / 1000.0)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    from skimage.measure import label

    labels = label(mask, connectivity=1)
    if labels.max() == 0:
        return np.zeros_like(mask, bool)
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    return labels == int(np.argmax(counts))


def connectivity_error(pred, ref, trimap=None, step: float = CONN_STEP) -> float:
    """Connectivity error: for each pixel the threshold level at which it leaves the largest
    4-connected component both mattes share; the degree of disconnection (alpha minus that
    level, counted from 0.15 up) compared between the mattes, summed over the region / 1000."""
    pred, ref = _pair(pred, ref)
    levels = np.arange(0.0, 1.0 + step / 2, step)
    level_map = np.full(ref.shape, -1.0)
    for i in range(1, len(levels)):
        omega = _largest_component((pred >= levels[i]) & (ref >= levels[i]))
        fresh = (level_map == -1) & ~omega
        level_map[fresh] = levels[i - 1]
    level_map[level_map == -1] = 1.0
    pred_d, ref_d = pred - level_map, ref - level_map
    pred_phi = 1.0 - pred_d * (pred_d >= CONN_THETA)
    ref_phi = 1.0 - ref_d * (ref_d >= CONN_THETA)
    return float(np.abs(pred_phi - ref_phi)[_region(ref.shape, trimap)].sum() / 1000.0)


def iou(pred, ref, threshold: float = IOU_THRESHOLD) -> float:
    """Intersection over union of the thresholded matte (alpha > threshold) and the reference
    mask (a binary mask, or a matte thresholded the same way); 1 when both are empty."""
    a = np.asarray(pred) > threshold
    b = np.asarray(ref) > threshold
    if a.shape != b.shape:
        raise ValueError(f"matte shapes differ: {a.shape} vs {b.shape}")
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def dtssd(pred_t, pred_prev, ref_t, ref_prev) -> float:
    """Root mean square of (d pred / dt - d ref / dt) over one pair of consecutive frames."""
    d = (np.asarray(pred_t, np.float64) - pred_prev) - (np.asarray(ref_t, np.float64) - ref_prev)
    return float(np.sqrt(np.mean(d * d)))


def matting_errors(pred, ref, trimap=None, threshold: float = IOU_THRESHOLD) -> dict[str, float]:
    """All per-image errors; `ref` may be a soft matte or a binary mask (both on [0, 1])."""
    return {"iou": iou(pred, ref, threshold), "sad": sad(pred, ref, trimap), "mse": mse(pred, ref, trimap),
            "mad": mad(pred, ref, trimap), "grad": gradient_error(pred, ref, trimap),
            "conn": connectivity_error(pred, ref, trimap)}
