"""Files in, matte files out, for the matting pipeline: images through PIL, videos through
PyAV one frame at a time (never the whole clip in memory). Every output is written
atomically: a single file through `xopt.atomic.atomic_path`, a PNG sequence into a hidden
temporary directory renamed into place at the end.
"""
from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import uuid
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from xopt.atomic import atomic_path
from xopt.errors import OutputExistsError, UserError
from xopt.extras import require

# container format, codec, pixel format. H.264/VP9 in 4:2:0 play everywhere; FFV1 in
# Matroska/AVI keeps the matte lossless and truly single-channel.
VIDEO_OUT = {
    ".mp4": ("mp4", "libx264", "yuv420p"), ".m4v": ("mp4", "libx264", "yuv420p"),
    ".mov": ("mov", "libx264", "yuv420p"), ".webm": ("webm", "libvpx-vp9", "yuv420p"),
    ".mkv": ("matroska", "ffv1", "gray"), ".avi": ("avi", "ffv1", "gray"),
}


def _to_uint8(matte: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(matte, 0, 1) * 255.0).astype(np.uint8)


def _is_image(src: Path) -> bool:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(src):
            return True
    except UnidentifiedImageError:
        return False
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
        return [write_image(pipe(src), target, force)]
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
    dst.parent.mkdir(parents=True, exist_ok=True)
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
