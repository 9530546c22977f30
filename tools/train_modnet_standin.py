#!/usr/bin/env python
"""Train a stand-in MODNet on synthetic composites, on a CPU, within a wall-clock budget.

Seeded-random weights make INT8 drift look chaotic: a random network amplifies every rounding
error. This trains the real architecture (models/modnet/net.py) just enough to be a smooth
matting function: head-and-shoulders shapes with hair-like soft edges, composited over crops of
scikit-image's bundled photographs, with MODNet's three losses (semantic, detail, matte) as the
official trainer computes them. It is not a portrait model and says so in its provenance.

Writes `--out` in the official release layout (nn.DataParallel's `module.`-prefixed state_dict,
both backbone aliases and the training heads) and `<out>.json` beside it: the recipe, losses,
timings, the machine, held-out matte MAE/IoU against the seeded-random weights, and the
checkpoint's sha256, by which `xopt.models.modnet.weights.load_checkpoint` recognises it.

    python tools/train_modnet_standin.py --out standin.ckpt [--minutes 22] [--seed 0] [--force]
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

BACKGROUNDS = ("astronaut", "camera", "coffee", "chelsea", "rocket", "stereo_motorcycle", "coins", "brick",
               "grass", "gravel", "moon", "immunohistochemistry", "hubble_deep_field")
# Held-out scenes are framed as portraits (head radius 6-18% of the frame); training also
# zooms in up to TRAIN_ZOOM[1], so that at a smaller training size the figures still span
# the pixel sizes they have at the 512 x 512 validation size.
FRAMING = (0.6, 1.6)
TRAIN_ZOOM = (0.6, 4.0)
VALIDATION_SEED_OFFSET = 1_000_003  # the held-out composites' stream never meets the training one


@dataclasses.dataclass
class Recipe:
    minutes: float = 22.0
    steps: int = 0  # 0: as many as the budget allows; the schedule then follows the clock
    seed: int = 0
    size: int = 192
    batch: int = 8
    lr: float = 2e-3
    min_lr: float = 2e-5
    warmup_steps: int = 30
    weight_decay: float = 0.0
    semantic_scale: float = 10.0  # the official trainer's loss weights
    detail_scale: float = 10.0
    matte_scale: float = 1.0
    boundary_weight: float = 4.0
    trimap_radius: int = 8  # unknown band half-width, px at `size`
    threads: int = 2
    val_count: int = 16
    val_size: int = 512
    log_every: int = 10
    zoom: tuple = TRAIN_ZOOM


# ---------------------------------------------------------------- synthetic composites

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

def training_forward(net, img):
    """The official forward with inference=False: (semantic at 1/16, detail, matte), each a
    sigmoid. net.MODNet.forward is the inference graph, so the heads are called here."""
    import torch
    import torch.nn.functional as F

    up2 = lambda x: F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)  # noqa: E731
    lr8x, enc2x, enc4x = net.lr_branch(img)
    semantic = torch.sigmoid(net.lr_branch.conv_lr(lr8x))
    hr2x = net.hr_branch(img, enc2x, enc4x, lr8x)
    detail = torch.sigmoid(net.hr_branch.conv_hr(torch.cat((up2(hr2x), img), dim=1)))
    return semantic, detail, net.f_branch(img, lr8x, hr2x)


def trimap(alpha, radius: int):
    """0 / 0.5 / 1: the unknown band is every pixel within `radius` of a fractional alpha or
    of the foreground's edge (dilated foreground minus eroded foreground)."""
    import torch.nn.functional as F

    k = 2 * radius + 1
    fg, solid = (alpha > 0.01).float(), (alpha > 0.99).float()
    dilated = F.max_pool2d(fg, k, stride=1, padding=radius)
    eroded = 1.0 - F.max_pool2d(1.0 - solid, k, stride=1, padding=radius)
    return eroded + 0.5 * (dilated - eroded)


def _blur3(x):
    """The official GaussianBlurLayer(1, 3): a 3x3 Gaussian (sigma 0.8), reflect padded."""
    import torch
    import torch.nn.functional as F

    g = torch.exp(-torch.tensor([-1.0, 0.0, 1.0]) ** 2 / (2 * 0.8 ** 2))
    g = g / g.sum()
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), (g[:, None] * g[None, :])[None, None])


def losses(recipe: Recipe, img, alpha, semantic, detail, matte) -> dict:
    """The official supervised_training_iter's losses (ZHKKKe/MODNet src/trainer.py)."""
    import torch
    import torch.nn.functional as F

    tri = trimap(alpha, recipe.trimap_radius)
    known = tri != 0.5
    gt_semantic = _blur3(F.interpolate(alpha, scale_factor=1 / 16, mode="bilinear", align_corners=False))
    semantic_loss = recipe.semantic_scale * F.mse_loss(semantic, gt_semantic)
    detail_loss = recipe.detail_scale * F.l1_loss(torch.where(known, tri, detail), torch.where(known, tri, alpha))
    boundary = torch.where(known, tri, matte)
    w = recipe.boundary_weight
    l1 = F.l1_loss(matte, alpha) + w * F.l1_loss(boundary, alpha)
    comp = F.l1_loss(img * matte, img * alpha) + w * F.l1_loss(img * boundary, img * alpha)
    matte_loss = recipe.matte_scale * (l1 + comp)
    return {"semantic": semantic_loss, "detail": detail_loss, "matte": matte_loss,
            "total": semantic_loss + detail_loss + matte_loss}


# ---------------------------------------------------------------- training and validation

def _lr(recipe: Recipe, progress: float, step: int) -> float:
    warm = min(1.0, (step + 1) / max(1, recipe.warmup_steps))
    return warm * (recipe.min_lr + 0.5 * (recipe.lr - recipe.min_lr) * (1 + math.cos(math.pi * min(1.0, progress))))


def seed_everything(seed: int) -> np.random.Generator:
    import torch

    random.seed(seed)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def train_step(recipe: Recipe, net, opt, img, alpha) -> dict:
    """One optimiser step on a batch; the losses (floats) before it."""
    parts = losses(recipe, img, alpha, *training_forward(net, img))
    opt.zero_grad(set_to_none=True)
    parts["total"].backward()
    opt.step()
    return {k: v.item() for k, v in parts.items()}


def train(recipe: Recipe, log=print):
    """Train from the official initialisation until `recipe.steps` or the wall budget;
    returns (net in eval mode, stats)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    try:
        return _train(recipe, log)
    finally:  # a caller's own thread setting (a test process, say) is not ours to keep
        torch.set_num_threads(threads)


def _train(recipe: Recipe, log):
    import torch

    from xopt.models.modnet.net import MODNet

    rng = seed_everything(recipe.seed)
    photos = _photos()
    net = MODNet()
    opt = torch.optim.Adam(net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    budget = recipe.minutes * 60.0
    start = time.monotonic()
    curve, step, last, recent = [], 0, {}, collections.deque(maxlen=recipe.log_every)
    net.train()
    while True:
        elapsed = time.monotonic() - start
        if (recipe.steps and step >= recipe.steps) or elapsed >= budget:
            break
        progress = step / recipe.steps if recipe.steps else elapsed / budget
        for group in opt.param_groups:
            group["lr"] = _lr(recipe, progress, step)
        last = train_step(recipe, net, opt, *batch(rng, recipe.batch, recipe.size, photos, recipe.zoom))
        recent.append(last)
        step += 1
        if step % recipe.log_every == 0 or step == 1:
            curve.append({"step": step, "elapsed_s": round(time.monotonic() - start, 1), **last})
            log(f"step {step} {time.monotonic() - start:.0f}s lr {opt.param_groups[0]['lr']:.2e} "
                + " ".join(f"{k} {v:.4f}" for k, v in last.items()))
    net.eval()
    # one batch's losses are noisy: the mean over the last log_every steps says more
    final_mean = {k: float(np.mean([r[k] for r in recent])) for k in last}
    return net, {"steps": step, "train_s": round(time.monotonic() - start, 1), "threads": torch.get_num_threads(),
                 "final_losses": last,
                 f"final_losses_mean_last_{len(recent)}": final_mean, "loss_curve": curve}


def held_out(recipe: Recipe):
    rng = np.random.default_rng(recipe.seed + VALIDATION_SEED_OFFSET)
    return batch(rng, recipe.val_count, recipe.val_size, _photos())


def matte_scores(net, images, alphas) -> dict:
    """Mean matte MAE and IoU (alpha > 0.5) against the ground truth, one image at a time."""
    import torch

    from xopt.models.modnet.pipeline import matte_metrics

    per = []
    with torch.no_grad():
        for x, a in zip(images, alphas):
            per.append(matte_metrics(a[0].numpy(), net(x[None])[0, 0].numpy()))
    return {"mae": float(np.mean([p["mae"] for p in per])), "iou": float(np.mean([p["iou"] for p in per])),
            "iou_min": float(np.min([p["iou"] for p in per]))}


def validate(recipe: Recipe, net) -> dict:
    from xopt.models.modnet.weights import seeded

    images, alphas = held_out(recipe)
    random_net, _ = seeded(recipe.seed)
    return {"count": recipe.val_count, "size": recipe.val_size,
            "backgrounds": "other crops and jitter of the training photographs, a separate seed stream",
            "standin": matte_scores(net, images, alphas), "seeded_random": matte_scores(random_net, images, alphas)}


# ---------------------------------------------------------------- outputs

def sidecar_of(out: Path) -> Path:
    return Path(str(out) + ".json")


def written_here(out: Path) -> bool:
    """True when `out` is a checkpoint this script wrote (its sidecar's sha256 matches)."""
    from xopt.hashing import sha256_file
    from xopt.models.modnet.weights import STANDIN_RECIPE

    if not out.is_file():
        return False
    try:
        meta = json.loads(sidecar_of(out).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("recipe") == STANDIN_RECIPE and meta.get("sha256") == sha256_file(out)


def check_out(out: Path, force: bool) -> bool:
    """Whether writing `out` (and its sidecar) may replace what is there; refuses foreign files."""
    from xopt.errors import OutputExistsError

    for path in (out, sidecar_of(out)):
        if path.exists() and not force and not written_here(out):
            raise OutputExistsError(path)
    return force or out.exists()


def save(out: Path, net, meta: dict, replace: bool) -> dict:
    """The checkpoint as the official release stores it, then the sidecar naming its sha256."""
    import torch
    from torch import nn

    from xopt.atomic import atomic_path, write_json
    from xopt.hashing import sha256_file
    from xopt.models.modnet.weights import STANDIN_NOTE, STANDIN_RECIPE

    with atomic_path(out, force=replace) as tmp:
        torch.save(nn.DataParallel(net).state_dict(), tmp)
        digest = sha256_file(tmp)
    meta = {"recipe": STANDIN_RECIPE, "note": STANDIN_NOTE, "checkpoint": out.name, "sha256": digest, **meta}
    write_json(sidecar_of(out), meta, force=True)  # check_out refused a foreign one before training
    return meta


def run(recipe: Recipe, out: Path, force: bool = False, log=print) -> dict:
    import torch

    from xopt.machine import describe

    replace = check_out(out, force)
    wall = time.monotonic()
    net, stats = train(recipe, log)
    log(f"trained {stats['steps']} steps in {stats['train_s']:.0f}s; validating")
    validation = validate(recipe, net)
    log(f"held-out {validation['count']} at {validation['size']}: standin {validation['standin']}, "
        f"seeded-random {validation['seeded_random']}")
    meta = {"hyperparameters": dataclasses.asdict(recipe), "seed": recipe.seed, "backgrounds": list(BACKGROUNDS),
            **stats, "validation": validation, "wall_s": round(time.monotonic() - wall, 1),
            "torch": torch.__version__, "machine": describe()}
    return save(out, net, meta, replace)


def main(argv=None) -> int:
    from xopt.errors import UserError

    defaults = Recipe()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="checkpoint path; <out>.json is written beside it")
    p.add_argument("--minutes", type=float, default=defaults.minutes, help="training wall-clock budget")
    p.add_argument("--steps", type=int, default=defaults.steps, help="stop after this many steps (0: the budget)")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--size", type=int, default=defaults.size, help="training crop side, a multiple of 32")
    p.add_argument("--batch", type=int, default=defaults.batch)
    p.add_argument("--threads", type=int, default=defaults.threads)
    p.add_argument("--force", action="store_true", help="overwrite a file this script did not write")
    args = p.parse_args(argv)
    recipe = Recipe(minutes=args.minutes, steps=args.steps, seed=args.seed, size=args.size, batch=args.batch,
                    threads=args.threads)
    try:
        if recipe.size % 32 or recipe.size < 64:
            raise UserError(f"--size {recipe.size} is not a multiple of 32 of at least 64",
                            "pass e.g. --size 256")
        if recipe.minutes <= 0:
            raise UserError(f"--minutes {recipe.minutes} is not positive", "pass a training budget such as --minutes 22")
        meta = run(recipe, args.out, args.force, log=lambda s: print(s, flush=True))
    except UserError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} (sha256 {meta['sha256']}) and {sidecar_of(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
