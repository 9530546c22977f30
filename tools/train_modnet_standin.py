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

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling module, also when loaded by path
from standin_composites import BACKGROUNDS, TRAIN_ZOOM, _photos, batch  # noqa: E402

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
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
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
