"""Files in, matte files out, for the matting pipeline: images through PIL, videos through
PyAV one frame at a time (never the whole clip in memory). Every output is written
atomically: a single file through `xopt.atomic.atomic_path`, a PNG sequence into a hidden
temporary directory renamed into place at the end.

Reading images (any mode, depth and alpha into RGB on the 8-bit scale) lives here too, with
the resolution limit that keeps a huge file from being decoded at all.
"""
from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import uuid
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np

from xopt.atomic import atomic_path, ensure_parent, is_disk_full, write_error
from xopt.errors import OutputExistsError, UserError
from xopt.extras import require

# container format, codec, pixel format. H.264/VP9 in 4:2:0 play everywhere; FFV1 in
# Matroska/AVI keeps the matte lossless and truly single-channel.
VIDEO_OUT = {
    ".mp4": ("mp4", "libx264", "yuv420p"), ".m4v": ("mp4", "libx264", "yuv420p"),
    ".mov": ("mov", "libx264", "yuv420p"), ".webm": ("webm", "libvpx-vp9", "yuv420p"),
    ".mkv": ("matroska", "ffv1", "gray"), ".avi": ("avi", "ffv1", "gray"),
}


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

def _to_uint8(matte: np.ndarray) -> np.ndarray:
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
        raise UserError(f"{src} is neither an image nor a video this build can read (not an image format, "
                        f"and {src.suffix or 'no extension'} is not a video extension)",
                        f"pass an image ({', '.join(STILL_IMAGE_SUFFIXES)}) or a video ({', '.join(VIDEO_SUFFIXES)})")
    return _process_video(pipe, src, dst, force, progress)


def write_image(matte: np.ndarray, dst: Path, force: bool) -> Path:
    """An 8-bit single-channel image in the format `dst`'s extension names."""
    from PIL import Image

    fmt = Image.registered_extensions().get(dst.suffix.lower())
    if fmt is None:
        raise UserError(f"unknown image extension {dst.suffix!r} for {dst}", "write the matte as .png")
    with atomic_path(dst, force=force) as tmp:
        try:
            Image.fromarray(_to_uint8(matte)).save(tmp, format=fmt)
        except (OSError, ValueError, KeyError) as exc:
            if is_disk_full(exc):
                raise  # atomic_path names it (no room left), not the format
            raise UserError(f"cannot write a grey matte as {fmt} ({exc})", "write the matte as .png") from exc
    return dst


# ---------------------------------------------------------------- video

def _frames(av, container, stream, src: Path) -> Iterator[np.ndarray]:
    try:
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="rgb24")
    except av.FFmpegError as exc:
        raise UserError(f"cannot decode {src} ({exc})", "re-encode the video or pass another file") from exc


def _process_video(pipe, src: Path, dst: Path, force: bool, progress) -> list[Path]:
    av = require("av", "video", "to read and write video")
    try:
        container = av.open(str(src))
    except av.error.EOFError as exc:  # a container that ends before its first packet
        raise _no_frames(src) from exc
    except (av.FFmpegError, OSError) as exc:
        raise UserError(f"{src} is neither an image nor a video this build can read ({exc})",
                        "pass a PNG/JPEG image or an MP4/MKV/MOV/WebM/AVI video") from exc
    ext = dst.suffix.lower()
    as_video = ext in VIDEO_OUT
    try:
        if not as_video and ext and not dst.is_dir():
            raise UserError(f"cannot write a video matte to {dst}",
                            f"use one of {', '.join(VIDEO_OUT)} for a video, or a directory for a PNG sequence")
        if not container.streams.video:
            raise UserError(f"{src} has no video stream", "pass a video file")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        mattes = pipe.frames(_frames(av, container, stream, src))
        if progress is not None:
            mattes = progress(mattes)
        if as_video:
            return [_write_video(av, mattes, dst, force, Fraction(rate), src)]
        return _write_sequence(mattes, dst, force, src)
    finally:
        container.close()


def _no_frames(src: Path) -> UserError:
    return UserError(f"{src} contains no video frames", "pass a video with at least one frame")


def _write_video(av, mattes: Iterable[np.ndarray], dst: Path, force: bool, rate: Fraction, src: Path) -> Path:
    fmt, codec, pix_fmt = VIDEO_OUT[dst.suffix.lower()]
    it = iter(mattes)
    with atomic_path(dst, force=force) as tmp:
        first = next(it, None)
        if first is None:
            raise _no_frames(src)
        h, w = first.shape
        if pix_fmt == "yuv420p" and (h % 2 or w % 2):
            pix_fmt = "yuv444p"  # 4:2:0 needs even sides; keep every column of the matte
        out = av.open(str(tmp), mode="w", format=fmt)
        try:
            stream = out.add_stream(codec, rate=rate)
            stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
            if codec == "libx264":
                stream.options = {"crf": "12"}  # flat regions and hard edges: spend bits on the edges
            for matte in itertools.chain([first], it):
                frame = av.VideoFrame.from_ndarray(_to_uint8(matte), format="gray")
                if pix_fmt != "gray":
                    frame = frame.reformat(format=pix_fmt)
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
        finally:
            out.close()
    return dst


def _sequence_exists(dst: Path) -> bool:
    return dst.exists() and not (dst.is_dir() and not any(dst.iterdir()))


def _write_sequence(mattes: Iterable[np.ndarray], dst: Path, force: bool, src: Path) -> list[Path]:
    from PIL import Image

    if _sequence_exists(dst) and not force:
        raise OutputExistsError(dst)
    ensure_parent(dst)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent))
    try:
        names = []
        for i, matte in enumerate(mattes):
            names.append(f"{i:06d}.png")
            Image.fromarray(_to_uint8(matte)).save(tmp / names[-1], format="PNG")
        if not names:
            raise _no_frames(src)
        _fsync_tree(tmp)
        _replace_dir(tmp, dst, force)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        err = write_error(exc, dst)
        if err is exc:
            raise
        raise err from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [dst / n for n in names]


def _fsync_tree(directory: Path) -> None:
    for p in [*directory.iterdir(), directory]:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _replace_dir(tmp: Path, dst: Path, force: bool) -> None:
    """Rename `tmp` onto `dst`; an old `dst` is moved aside first and removed only after."""
    old = None
    if dst.exists():
        if _sequence_exists(dst) and not force:
            raise OutputExistsError(dst)
        if dst.is_dir() and not any(dst.iterdir()):
            dst.rmdir()
        else:
            old = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.old")
            os.replace(dst, old)
    os.replace(tmp, dst)
    if old is not None:
        shutil.rmtree(old) if old.is_dir() else old.unlink()
