"""Files in, matte files out, for the matting pipeline: images through PIL here, videos
through PyAV in video_io.py. A matte image is written atomically (`xopt.atomic.atomic_path`).

Reading images (any mode, depth and alpha into RGB on the 8-bit scale) lives here too, with
the resolution limit that keeps a huge file from being decoded at all.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from xopt.atomic import atomic_path, is_disk_full
from xopt.errors import OutputExistsError, UserError

STILL_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".gif", ".y4m")

# Input resolution limit when neither the pipeline config nor the device profile names one
# (the shipped profiles' [targets] max_height/max_width: 4K UHD).
DEFAULT_MAX_SIZE = (2160, 3840)


# ---------------------------------------------------------------- images in

def max_image_size(config: Mapping[str, Any] | None = None, profile=None) -> tuple[int, int]:
    """(max height, max width) of an input image: the config's `max_height`/`max_width`, else
    the device profile's targets (default profile when none is given), else 4K UHD."""
    cfg = dict(config or {})
    if "max_height" in cfg and "max_width" in cfg:
        return int(cfg["max_height"]), int(cfg["max_width"])
    if profile is None:
        from xopt.profiles import get_profile

        profile = get_profile(None)
    targets = profile.model_targets("modnet")
    return int(targets.get("max_height", DEFAULT_MAX_SIZE[0])), int(targets.get("max_width", DEFAULT_MAX_SIZE[1]))


def check_size(h: int, w: int, max_size: tuple[int, int] | None) -> None:
    """Refuse an image over `max_size` in either orientation (a portrait photo is the same
    picture turned): decoding it alone can take gigabytes, and the matte is made at ~512 px."""
    if max_size is None:
        return
    long_side, short_side = max(max_size), min(max_size)
    if max(h, w) > long_side or min(h, w) > short_side:
        raise UserError(f"the image is {w}x{h} px, over the {long_side}x{short_side} px the device profile allows",
                        f"scale it down to at most {long_side}x{short_side} (either orientation) first")


def _pil():
    from PIL import Image

    return Image


def _quiet_pil(Image) -> None:
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    warnings.simplefilter("ignore", UserWarning)


def _open_image(path: Path, max_size: tuple[int, int] | None = None):
    Image = _pil()
    if not path.exists():
        raise UserError(f"{path} does not exist", "check the input path")
    if path.is_dir():
        raise UserError(f"{path} is a directory", "pass an image file")
    try:
        with warnings.catch_warnings():
            # PIL warns about damaged metadata (UserWarning) and decompression bombs; either would
            # break the one-line error, and the size is checked here from the header anyway.
            _quiet_pil(Image)
            with Image.open(path) as im:
                check_size(im.height, im.width, max_size)
                im.load()
                return im.copy()
    except Image.DecompressionBombError as exc:  # past twice PIL's pixel limit: refused in open()
        raise UserError(f"{path} is too large to decode ({exc})", "scale it down first") from exc
    except (OSError, ValueError, SyntaxError) as exc:  # UnidentifiedImageError is an OSError
        raise UserError(f"{path} is not a readable image ({exc})", "pass a PNG, JPEG, TIFF, BMP or WebP file") from exc


def _from_pil(im) -> np.ndarray:
    if im.mode.startswith("I;16") or im.mode == "I":
        return np.clip(np.asarray(im, np.float64), 0, 65535) / 257.0
    if im.mode == "F":
        return _from_float(np.asarray(im))
    if im.mode not in ("L", "RGB", "RGBA"):
        im = im.convert("RGB")
    return np.asarray(im, np.float32)


def _from_float(a: np.ndarray) -> np.ndarray:
    if not np.isfinite(a).all():
        raise UserError("the image contains NaN or Inf", "pass finite pixel values")
    if a.size and (a.min() < -1e-3 or a.max() > 1 + 1e-3):
        raise UserError(f"a float image must hold values in [0, 1], this one spans [{a.min():g}, {a.max():g}]",
                        "divide by 255 (or pass it as uint8)")
    return np.clip(a.astype(np.float32), 0, 1) * 255.0


def to_rgb(image: Any, max_size: tuple[int, int] | None = None) -> np.ndarray:
    """Any supported image as H x W x 3 float32 on the 8-bit scale [0, 255].

    Grey images get three equal channels and alpha is dropped (as the official demo does);
    16-bit images are scaled by 255/65535; float images are read as [0, 1]. `max_size`
    (height, width) refuses larger images (see `check_size`).
    """
    if isinstance(image, (str, os.PathLike)):
        image = _open_image(Path(image), max_size)
    if hasattr(image, "to_ndarray") and not isinstance(image, np.ndarray):  # a PyAV VideoFrame
        image = image.to_ndarray(format="rgb24")
    if hasattr(image, "mode") and hasattr(image, "getbands"):  # PIL.Image.Image
        a = _from_pil(image)
    elif isinstance(image, np.ndarray):
        if image.dtype == np.uint8:
            a = image.astype(np.float32)
        elif image.dtype == np.uint16:
            a = image.astype(np.float32) / 257.0
        elif image.dtype == np.bool_:
            a = image.astype(np.float32) * 255.0
        elif np.issubdtype(image.dtype, np.floating):
            a = _from_float(image)
        else:
            raise UserError(f"unsupported image dtype {image.dtype}", "pass uint8, uint16 or float in [0, 1]")
    else:
        raise UserError(f"cannot read an image from a {type(image).__name__}",
                        "pass a file path, a PIL image or a numpy array")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise UserError(f"an image array must be H x W, H x W x 3 or H x W x 4, got shape {a.shape}",
                        "pass a grey, RGB or RGBA image")
    if 0 in a.shape[:2]:
        raise UserError(f"the image is empty ({a.shape[1]}x{a.shape[0]} px)", "pass an image with pixels in it")
    check_size(a.shape[0], a.shape[1], max_size)
    return np.ascontiguousarray(a[:, :, :3], np.float32)


# ---------------------------------------------------------------- mattes out

def to_uint8(matte: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(matte, 0, 1) * 255.0).astype(np.uint8)


def _is_image(src: Path) -> bool:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            _quiet_pil(Image)
            with Image.open(src):
                return True
    except Image.DecompressionBombError:
        return True  # an image, too large: reading it says so
    except UnidentifiedImageError:
        # FFmpeg would open a damaged "x.png" as a one-frame "video" (by its extension) and the
        # error would be about the output; named as a still image, it is reported as one.
        return src.suffix.lower() in STILL_IMAGE_SUFFIXES
    except OSError as exc:
        raise UserError(f"cannot read {src} ({exc})", "check the file and its permissions") from exc


def inspect(src: Path) -> dict:
    """What `process_file` would read, from headers (and a video's first frame) only: an image
    PIL identifies, or a video with a decodable frame. UserError for anything else."""
    if _is_image(src):
        Image = _pil()
        try:
            with warnings.catch_warnings():
                _quiet_pil(Image)
                with Image.open(src) as im:
                    return {"kind": "image", "width": im.width, "height": im.height, "mode": im.mode}
        except Image.DecompressionBombError as exc:  # past twice PIL's pixel limit: as `_open_image` says
            raise UserError(f"{src} is too large to decode ({exc})", "scale it down first") from exc
        except (OSError, ValueError, SyntaxError) as exc:
            raise UserError(f"{src} is not a readable image ({exc})", "pass a PNG, JPEG, TIFF, BMP or WebP file") from exc
    if src.suffix.lower() not in VIDEO_SUFFIXES:
        raise _not_media(src)
    from xopt.models.modnet.video_io import inspect_video

    return inspect_video(src)


def _not_media(src: Path) -> UserError:
    return UserError(f"{src} is neither an image nor a video this build can read (not an image format, "
                     f"and {src.suffix or 'no extension'} is not a video extension)",
                     f"pass an image ({', '.join(STILL_IMAGE_SUFFIXES)}) or a video ({', '.join(VIDEO_SUFFIXES)})")


def process_file(pipe, src: Path, dst: Path, force: bool,
                 progress: Callable[[Iterable], Iterable] | None) -> list[Path]:
    if not src.exists():
        raise UserError(f"{src} does not exist", "check the input path")
    if not src.is_file():
        raise UserError(f"{src} is not a file", "pass an image or a video file")
    if _is_image(src):
        target = dst / f"{src.stem}.png" if dst.is_dir() or not dst.suffix else dst
        if target.resolve() == src.resolve():
            raise UserError(f"the matte would overwrite the input {src}", "choose another output path")
        if target.exists() and not force:
            raise OutputExistsError(target)  # before the inference, not after it
        return [write_image(pipe(src), target, force)]
    if src.suffix.lower() not in VIDEO_SUFFIXES:
        raise _not_media(src)
    from xopt.models.modnet.video_io import process_video

    return process_video(pipe, src, dst, force, progress)


def write_image(matte: np.ndarray, dst: Path, force: bool) -> Path:
    """An 8-bit single-channel image in the format `dst`'s extension names."""
    from PIL import Image

    fmt = Image.registered_extensions().get(dst.suffix.lower())
    if fmt is None:
        raise UserError(f"unknown image extension {dst.suffix!r} for {dst}", "write the matte as .png")
    with atomic_path(dst, force=force) as tmp:
        try:
            Image.fromarray(to_uint8(matte)).save(tmp, format=fmt)
        except (OSError, ValueError, KeyError) as exc:
            if is_disk_full(exc):
                raise  # atomic_path names it (no room left), not the format
            raise UserError(f"cannot write a grey matte as {fmt} ({exc})", "write the matte as .png") from exc
    return dst
