"""Synthetic portrait-like composites for tools/train_modnet_standin.py: head-and-shoulders
shapes with hair-strand alpha edges over crops of scikit-image's bundled photographs."""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

BACKGROUNDS = ("astronaut", "camera", "coffee", "chelsea", "rocket", "stereo_motorcycle", "coins", "brick",
               "grass", "gravel", "moon", "immunohistochemistry", "hubble_deep_field")
# Held-out scenes are framed as portraits (head radius 6-18% of the frame); training also
# zooms in up to TRAIN_ZOOM[1], so that at a smaller training size the figures still span
# the pixel sizes they have at the 512 x 512 validation size.
FRAMING = (0.6, 1.6)
TRAIN_ZOOM = (0.6, 4.0)

def _photos() -> list[np.ndarray]:
    from skimage import data

    from xopt.models.modnet.image_io import to_rgb

    out = []
    for name in BACKGROUNDS:
        image = getattr(data, name)()
        image = image[0] if isinstance(image, tuple) else image
        out.append(to_rgb(image).astype(np.float32) / 255.0)
    return out


def _smooth_noise(rng, size: int, cells: int, channels: int) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    coarse = torch.from_numpy(rng.normal(0.0, 1.0, (1, channels, cells, cells)).astype(np.float32))
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[0].numpy()


def _ellipse_distance(xx, yy, cx, cy, rx, ry, angle=0.0):
    """Approximate signed distance (px) to an ellipse: exact on circles, close enough for edges."""
    c, s = math.cos(angle), math.sin(angle)
    u, v = (xx - cx) * c + (yy - cy) * s, -(xx - cx) * s + (yy - cy) * c
    return (np.sqrt((u / rx) ** 2 + (v / ry) ** 2) - 1.0) * min(rx, ry)


def _strands(rng, size: int, cx, cy, rx, ry, scale: float) -> np.ndarray:
    """Hair: thin curved strands leaving the head's upper outline, splatted with bilinear
    weights at half-pixel spacing so sub-pixel strands get fractional alpha."""
    n = max(8, int(rng.integers(60, 320) * rx / 28.0))  # per head outline, as dense at any pixel scale
    theta = rng.uniform(-math.pi * 1.05, math.pi * 0.05, n)  # mostly the upper half (image y points down)
    length = rng.uniform(0.01, 0.12, n) * size * scale
    points = np.maximum(2, (length * 2).astype(np.int64))
    strand = np.repeat(np.arange(n), points)
    first = np.cumsum(points) - points
    t = (np.arange(len(strand)) - first[strand] + 1) / points[strand]
    ang = (theta + rng.normal(0.0, 0.5, n))[strand] + rng.normal(0.0, 0.35, n)[strand] * t
    step_x, step_y = np.cos(ang) * length[strand] / points[strand], np.sin(ang) * length[strand] / points[strand]
    # a cumulative sum per strand: the global one minus its value just before each strand starts
    px, py = np.cumsum(step_x), np.cumsum(step_y)
    px = px - (px[first] - step_x[first])[strand] + (cx + rx * np.cos(theta))[strand]
    py = py - (py[first] - step_y[first])[strand] + (cy + ry * np.sin(theta))[strand]
    weight = 0.5 * rng.uniform(0.25, 1.0, n)[strand]
    fx, fy = np.floor(px), np.floor(py)
    wx, wy = px - fx, py - fy
    ix, iy = fx.astype(np.int64) + 1, fy.astype(np.int64) + 1
    ok = (ix >= 0) & (iy >= 0) & (ix < size + 1) & (iy < size + 1)
    ix, iy, wx, wy, weight = ix[ok], iy[ok], wx[ok], wy[ok], weight[ok]
    side = size + 2
    acc = np.zeros(side * side)
    for dy, dx, w in ((0, 0, (1 - wx) * (1 - wy)), (0, 1, wx * (1 - wy)), (1, 0, (1 - wx) * wy), (1, 1, wx * wy)):
        acc += np.bincount((iy + dy) * side + ix + dx, weight * w, minlength=side * side)
    return np.clip(acc.reshape(side, side)[1:-1, 1:-1], 0.0, 1.0).astype(np.float32)


def _texture(rng, size: int, photos) -> np.ndarray:
    """Clothing/skin texture: a flat colour with smooth noise, stripes, or another photo."""
    kind = rng.integers(0, 3)
    if kind == 2:
        return _crop(rng, photos[rng.integers(len(photos))], size)
    colour = rng.uniform(0.0, 1.0, (3, 1, 1)).astype(np.float32)
    tex = colour + 0.15 * _smooth_noise(rng, size, int(rng.integers(3, 12)), 3)
    if kind == 1:
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        a = rng.uniform(0, math.pi)
        period = rng.uniform(4, 40) * size / 256
        stripe = np.sin((xx * math.cos(a) + yy * math.sin(a)) * 2 * math.pi / period) > 0
        tex = np.where(stripe, tex, rng.uniform(0.0, 1.0, (3, 1, 1)).astype(np.float32))
    return np.clip(tex, 0.0, 1.0)


def _crop(rng, photo: np.ndarray, size: int) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    h, w = photo.shape[:2]
    side = int(min(h, w) * rng.uniform(0.35, 1.0))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = torch.from_numpy(np.ascontiguousarray(photo[y:y + side, x:x + side].transpose(2, 0, 1)))[None]
    out = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0].numpy()
    return out[:, :, ::-1] if rng.random() < 0.5 else out


def _jitter(rng, image: np.ndarray) -> np.ndarray:
    grey = image.mean(axis=0, keepdims=True)
    image = grey + (image - grey) * rng.uniform(0.4, 1.5)  # saturation
    image = (image - 0.5) * rng.uniform(0.7, 1.3) + 0.5 + rng.uniform(-0.15, 0.15)  # contrast, brightness
    image = image * rng.uniform(0.9, 1.1, (3, 1, 1))  # white balance
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def composite(rng: np.random.Generator, size: int, photos, zoom=FRAMING) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic sample: (image [3, S, S] on [0, 1], alpha [S, S]); `zoom` bounds the
    figure's size relative to the frame (log-uniform)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    scale = math.exp(rng.uniform(math.log(zoom[0]), math.log(zoom[1])))
    hrx = size * 0.11 * scale
    hry = hrx * rng.uniform(1.1, 1.4)
    cx, cy = size * rng.uniform(0.2, 0.8), size * rng.uniform(0.15, 0.55)
    tilt = rng.uniform(-0.35, 0.35)
    d_head = _ellipse_distance(xx, yy, cx, cy, hrx, hry, tilt)
    neck_y = cy + hry * rng.uniform(0.8, 1.2)
    d_neck = _ellipse_distance(xx, yy, cx, neck_y, hrx * rng.uniform(0.35, 0.55), hry * 0.5)
    tcx = cx + size * rng.uniform(-0.08, 0.08)
    trx, try_ = hrx * rng.uniform(1.8, 3.4), hry * rng.uniform(0.8, 1.6)
    tcy = neck_y + hry * 0.3 + try_ * 0.8
    d_torso = np.minimum(_ellipse_distance(xx, yy, tcx, tcy, trx, try_),
                         np.maximum(np.abs(xx - tcx) - trx * rng.uniform(0.8, 1.0), tcy - yy))
    cap_rx, cap_ry = hrx * rng.uniform(1.02, 1.25), hry * rng.uniform(1.02, 1.2)
    d_cap = np.maximum(_ellipse_distance(xx, yy, cx, cy - hry * 0.08, cap_rx, cap_ry, tilt),
                       yy - (cy + hry * rng.uniform(-0.2, 0.7)))
    d_body = np.minimum(np.minimum(d_head, d_neck), np.minimum(d_torso, d_cap))
    body = np.clip(0.5 - d_body / rng.uniform(0.7, 1.8), 0.0, 1.0)
    hair = _strands(rng, size, cx, cy - hry * 0.08, cap_rx, cap_ry, scale)
    hair = ndimage.gaussian_filter(hair, rng.uniform(0.2, 0.7))
    alpha = 1.0 - (1.0 - body) * (1.0 - hair)
    if rng.random() < 0.5:  # defocus or motion softness: blurs only the boundary band
        alpha = ndimage.gaussian_filter(alpha, rng.uniform(0.4, 2.0))
    alpha = np.clip(alpha, 0.0, 1.0).astype(np.float32)

    fg = _texture(rng, size, photos)
    skin = np.clip(rng.uniform([0.35, 0.2, 0.1], [1.0, 0.85, 0.75])[:, None, None]
                   + 0.06 * _smooth_noise(rng, size, 6, 3), 0, 1)
    hair_colour = rng.uniform(0.0, 0.3) + rng.uniform(0.0, 0.6, (3, 1, 1)) * rng.uniform(0, 1)
    hair_tex = np.clip(hair_colour + 0.08 * rng.normal(0, 1, (3, size, size)), 0, 1)
    is_skin = (np.minimum(d_head, d_neck) < 1.5)[None]
    is_hair = ((d_cap < 1.5) & (d_head > -hrx * 0.15) | (hair > 0.02) | (d_head > 0) & (d_torso > 0))[None]
    fg = np.where(is_hair & ~(d_torso < 0)[None] & ~((d_head < 0) & (yy > cy - hry * 0.3))[None], hair_tex,
                  np.where(is_skin, skin, fg))
    shade = 1.0 + rng.uniform(-0.3, 0.3) * (xx - cx) / size + rng.uniform(-0.3, 0.3) * (yy - cy) / size
    fg = np.clip(fg * shade[None], 0.0, 1.0)

    bg = _crop(rng, photos[rng.integers(len(photos))], size)
    if rng.random() < 0.3:
        bg = ndimage.gaussian_filter(bg, (0, *(2 * [rng.uniform(0.5, 3.0)])))
    bg = _jitter(rng, bg)
    image = alpha[None] * fg + (1.0 - alpha[None]) * bg
    image = image + rng.normal(0.0, 1.5 / 255, image.shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32), alpha


def batch(rng, count: int, size: int, photos, zoom=FRAMING):
    """(normalised images [N, 3, S, S] on [-1, 1], alphas [N, 1, S, S]) as torch tensors."""
    import torch

    pairs = [composite(rng, size, photos, zoom) for _ in range(count)]
    images = np.stack([p[0] for p in pairs]) * 2.0 - 1.0
    return torch.from_numpy(images.astype(np.float32)), torch.from_numpy(np.stack([p[1] for p in pairs])[:, None])


# ---------------------------------------------------------------- MODNet's training graph and losses
