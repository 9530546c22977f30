"""Matting datasets in the layouts users already have, and their mattes/masks read as alpha.

- pairs: DATA/images/ + DATA/mattes/ paired by file stem; P3M-10k (blurred_image/, mask/,
  trimap/) and AM-2k (original/, mask/, trimap/) folders are recognised the same way, and
  `--images DIR --mattes DIR [--trimaps DIR]` names the folders directly.
- video: the YouTube-VOS layout, DATA/JPEGImages/<video>/<frame>.jpg with
  DATA/Annotations/<video>/<frame>.png (palette object masks: any object is foreground).
  Frames without an annotation are run (they count for flicker) but not scored: YouTube-VOS
  annotates a subset of frames, and the report says how many were scored.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from xopt.errors import UserError
from xopt.spec import EvalDataset, EvalItem

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
IMAGE_DIRS = ("images", "image", "original", "blurred_image")
MATTE_DIRS = ("mattes", "matte", "alpha", "mask")
TRIMAP_DIRS = ("trimaps", "trimap")
METHOD = ("alpha on [0, 1]; iou: foreground at alpha > 0.5 against the reference thresholded the same way; "
          "sad (/1000), mse, mad, grad (Gaussian-derivative sigma 1.4, /1000) and conn (/1000) as in Deep Image "
          "Matting's evaluation code; mean over items")


def _files(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."):
            if f.stem in out:
                raise UserError(f"{folder} holds two files named {f.stem} ({out[f.stem].name}, {f.name})",
                                "keep one file per stem: pairs are matched by file stem")
            out[f.stem] = f
    return out


def _listing(names, limit: int = 8) -> str:
    names = sorted(names)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def unpaired(kind: str, names, where: Path, skip: bool, notes: list) -> None:
    """A missing pair: an error naming them, or (with --skip-missing) a note naming them."""
    if not names:
        return
    text = f"{len(names)} {kind} in {where}: {_listing(names)}"
    if not skip:
        raise UserError(text, "add the missing files, or pass --skip-missing to score the complete pairs only")
    notes.append(f"skipped {text}")


def _folder(path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{what} {path} is not a directory", f"pass the folder that holds the {what}")
    return path


def _first(root: Path, names) -> Path | None:
    return next((root / n for n in names if (root / n).is_dir()), None)


def read_dataset(data, options: Mapping[str, str | None]) -> EvalDataset:
    opts = dict(options or {})
    skip = bool(opts.get("skip_missing"))
    if opts.get("images") or opts.get("mattes"):
        if not (opts.get("images") and opts.get("mattes")):
            raise UserError("--images and --mattes go together", "pass both folders (and --trimaps if you have them)")
        return _pairs(_folder(opts["images"], "images"), _folder(opts["mattes"], "mattes"),
                      _folder(opts["trimaps"], "trimaps") if opts.get("trimaps") else None, skip, "images/mattes")
    if data is None:
        raise UserError("no dataset given", "pass DATA (a folder with images/ and mattes/, or JPEGImages/ and "
                        "Annotations/), or --images DIR --mattes DIR")
    root = _folder(data, "dataset")
    if (root / "JPEGImages").is_dir() and (root / "Annotations").is_dir():
        return _video(root, skip)
    images, mattes = _first(root, IMAGE_DIRS), _first(root, MATTE_DIRS)
    if images and mattes:
        trimaps = _folder(opts["trimaps"], "trimaps") if opts.get("trimaps") else _first(root, TRIMAP_DIRS)
        return _pairs(images, mattes, trimaps, skip, f"{images.name}/ + {mattes.name}/")
    raise UserError(f"{root} is not a matting dataset layout xopt knows",
                    f"use {root}/images + {root}/mattes (or {'/'.join(IMAGE_DIRS)} with {'/'.join(MATTE_DIRS)}), "
                    "JPEGImages/ + Annotations/ (YouTube-VOS), or --images DIR --mattes DIR")


def _pairs(images: Path, mattes: Path, trimaps: Path | None, skip: bool, layout: str) -> EvalDataset:
    notes: list[str] = []
    imgs, refs = _files(images), _files(mattes)
    if not imgs:
        raise UserError(f"{images} holds no images", f"put images ({', '.join(IMAGE_SUFFIXES)}) there")
    unpaired("images have no matte", set(imgs) - set(refs), mattes, skip, notes)
    unpaired("mattes have no image", set(refs) - set(imgs), images, skip, notes)
    tris = _files(trimaps) if trimaps else {}
    if trimaps:
        unpaired("images have no trimap", set(imgs) & set(refs) - set(tris), trimaps, skip, notes)
    items = [EvalItem(stem, imgs[stem], refs[stem], {"trimap": tris.get(stem), "kind": "image"})
             for stem in sorted(set(imgs) & set(refs)) if not trimaps or stem in tris]
    region = "the trimaps' unknown band" if trimaps else "the whole image (no trimaps)"
    return EvalDataset(f"{layout} ({len(items)} pairs; errors over {region})", items, notes, METHOD)


def _video(root: Path, skip: bool) -> EvalDataset:
    notes: list[str] = []
    frames_root, ann_root = root / "JPEGImages", root / "Annotations"
    videos = {d.name: d for d in sorted(frames_root.iterdir()) if d.is_dir()}
    anns = {d.name: d for d in sorted(ann_root.iterdir()) if d.is_dir()}
    if not videos:
        raise UserError(f"{frames_root} holds no video folders", "use JPEGImages/<video>/<frame>.jpg")
    unpaired("videos have no annotation folder", set(videos) - set(anns), ann_root, skip, notes)
    unpaired("annotation folders have no frames", set(anns) - set(videos), frames_root, skip, notes)
    items, unscored = [], 0
    for name in sorted(set(videos) & set(anns)):
        frames, masks = _files(videos[name]), _files(anns[name])
        if not frames:
            raise UserError(f"{videos[name]} holds no frames", "put the video's frames there as images")
        unpaired(f"annotations of video {name} have no frame", set(masks) - set(frames), videos[name], skip, notes)
        order = sorted(frames)
        reference = {s: masks[s] for s in order if s in masks}
        if not reference:
            unpaired("videos have no annotated frame", [name], anns[name], skip, notes)
            continue
        unscored += len(order) - len(reference)
        items.append(EvalItem(name, [frames[s] for s in order], reference, {"kind": "video", "frames": order}))
    if unscored:
        notes.append(f"{unscored} frames have no annotation: run for the flicker check, not scored")
    n_frames = sum(len(i.reference) for i in items)
    return EvalDataset(f"YouTube-VOS (JPEGImages/ + Annotations/: {len(items)} videos, {n_frames} annotated frames; "
                       "reference masks are binary, errors over the whole frame)", items, notes,
                       METHOD + "; dtSSD: RMS of the temporal-derivative difference over consecutive annotated frames")


def read_alpha(path) -> np.ndarray:
    """A matte or mask file as H x W float32 alpha on [0, 1]. Palette images (object-id masks,
    YouTube-VOS/DAVIS) count every non-zero index as foreground; RGBA uses its alpha channel;
    16-bit greyscale keeps its precision."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode == "P":
                return (np.asarray(im) != 0).astype(np.float32)
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                a = np.asarray(im, np.float64)
                return np.clip(a / (65535.0 if a.max() > 255 else 255.0), 0, 1).astype(np.float32)
            if mode in ("1",):
                return np.asarray(im, np.float32)
            if mode in ("RGBA", "LA"):
                band = np.asarray(im.getchannel("A"), np.float32)
                if band.min() < 255:
                    return band / 255.0
            if mode == "F":
                return np.clip(np.asarray(im, np.float32), 0, 1)
            return np.asarray(im.convert("L"), np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UserError(f"cannot read {path} as a matte ({exc})", "pass a PNG/JPEG greyscale matte or mask") from exc


def read_trimap(path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UserError(f"cannot read {path} as a trimap ({exc})", "pass a greyscale trimap (0, 128, 255)") from exc
