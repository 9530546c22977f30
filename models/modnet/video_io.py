"""Video files in, matte videos or PNG sequences out, for the matting pipeline: PyAV one frame
at a time (never the whole clip in memory), decoding, inference and encoding each on a thread of
its own with a few frames queued between them (`xopt.prefetch`), so end-to-end frames per second
approach the model's own. A matte video is written through
`xopt.atomic.atomic_path`, a PNG sequence into a hidden temporary directory renamed into place
at the end. A file that ends before the frames its container promises is matted as far as it
goes and reported (the pipeline's `note`, failed: `xopt run` exits 3).
"""
from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile
import uuid
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from xopt.atomic import atomic_path, ensure_parent, write_error
from xopt.errors import OutputExistsError, UserError
from xopt.extras import require
from xopt.prefetch import prefetched
from xopt.models.modnet.image_io import to_uint8

STREAM_DEPTH = 4  # frames queued between decoding, inference and encoding: a 1080p RGB frame is 6 MB

# container format, codec, pixel format. H.264/VP9 in 4:2:0 play everywhere; FFV1 in
# Matroska/AVI keeps the matte lossless and truly single-channel.
VIDEO_OUT = {
    ".mp4": ("mp4", "libx264", "yuv420p"), ".m4v": ("mp4", "libx264", "yuv420p"),
    ".mov": ("mov", "libx264", "yuv420p"), ".webm": ("webm", "libvpx-vp9", "yuv420p"),
    ".mkv": ("matroska", "ffv1", "gray"), ".avi": ("avi", "ffv1", "gray"),
}


class _Tally:
    """What decoding got: frames, and the packets that could not be decoded (the first error)."""

    def __init__(self):
        self.frames = self.errors = 0
        self.error: str | None = None

    def failed(self, exc: BaseException) -> None:
        self.errors += 1
        self.error = self.error or str(exc).splitlines()[0][:160]


def _frames(av, container, stream, src: Path, tally: _Tally, fmt: str = "rgb24") -> Iterator[np.ndarray]:
    """Decoded RGB frames, packet by packet: a packet that does not decode (a file cut off
    mid-packet, a damaged one) is counted and skipped, so what is there still gets matted and
    the shortfall is reported (`_shortfall`); a stream with no decodable frame is a UserError."""
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except av.FFmpegError as exc:  # the demuxer itself gave up: the data ends here
            tally.failed(exc)
            break
        try:
            decoded = packet.decode()
        except av.FFmpegError as exc:
            tally.failed(exc)
            continue
        for frame in decoded:
            tally.frames += 1
            yield frame.to_ndarray(format=fmt)
    if not tally.frames and tally.errors:
        raise UserError(f"cannot decode {src} ({tally.error})", "re-encode the video or pass another file")


def read_frames(src: Path, fmt: str = "rgb24") -> Iterator[np.ndarray]:
    """Every frame of `src` that decodes, as `process_video` reads them (a file cut off mid-packet
    gives what it holds), as arrays in the PyAV format `fmt` ("rgb24", "gray")."""
    av = require("av", "video", "to read video")
    container = _open_video(av, Path(src))
    try:
        if not container.streams.video:
            raise UserError(f"{src} has no video stream", "pass a video file")
        yield from _frames(av, container, container.streams.video[0], Path(src), _Tally(), fmt)
    finally:
        container.close()


def _expected(av, container, stream, rate: Fraction) -> tuple[int | None, float | None, bool]:
    """(frames, seconds, exact) the container promises: the stream's frame count where the
    container keeps one (MP4, MOV), else its duration at the frame rate (Matroska, WebM)."""
    if stream.frames:
        return int(stream.frames), float(stream.frames / rate), True
    seconds = None
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration:
        seconds = container.duration / av.time_base
    if not seconds or seconds <= 0:
        return None, None, False
    return int(round(seconds * rate)), seconds, False


def _shortfall(av, container, stream, rate: Fraction, tally: _Tally, src: Path) -> str | None:
    """The sentence for a video that gave fewer frames than its container promises, else None.
    A count from the container's index may differ from the decoded one by a frame of
    pre-roll; a count from the duration by its rounding (and by a longer audio track): beyond
    1 % (at least 1 frame) and 2 % (at least 2 frames), the file ends early."""
    frames, seconds, exact = _expected(av, container, stream, rate)
    got = tally.frames
    short = frames is not None and frames - got > (max(1, 0.01 * frames) if exact else max(2, 0.02 * frames))
    if not short and not tally.errors:
        return None
    of = f" of {frames}" if short else ""
    secs = f" of {seconds:.1f} s" if short else ""
    why = f"; {tally.errors} packet(s) could not be decoded ({tally.error})" if tally.errors else ""
    end = "the file ends early" if short else "the file is damaged"
    return f"{src}: read {got}{of} frames ({got / float(rate):.1f} s{secs}): {end}{why}"


def _open_video(av, src: Path):
    try:
        return av.open(str(src))
    except av.error.EOFError as exc:  # a container that ends before its first packet
        raise _no_frames(src) from exc
    except (av.FFmpegError, OSError) as exc:
        raise UserError(f"{src} is neither an image nor a video this build can read ({exc})",
                        "pass a PNG/JPEG image or an MP4/MKV/MOV/WebM/AVI video") from exc


def process_video(pipe, src: Path, dst: Path, force: bool, progress) -> list[Path]:
    av = require("av", "video", "to read and write video")
    container = _open_video(av, src)
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
        tally = _Tally()
        # decode -> [queue] -> inference -> [queue] -> encode here; closing in this order joins the
        # inference thread before the decoder's, and both before the container closes
        with contextlib.closing(prefetched(_frames(av, container, stream, src, tally), STREAM_DEPTH,
                                           "xopt-decode")) as frames, \
                contextlib.closing(prefetched(pipe.frames(frames), STREAM_DEPTH, "xopt-infer")) as inferred:
            mattes = progress(inferred) if progress is not None else inferred
            if as_video:
                written = [_write_video(av, mattes, dst, force, Fraction(rate), src)]
            else:
                written = _write_sequence(mattes, dst, force, src)
        short = _shortfall(av, container, stream, Fraction(rate), tally, src)
        if short:  # what was there is matted and written; the run says what was missing
            pipe.note(short, failed=True)
        return written
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
                frame = av.VideoFrame.from_ndarray(to_uint8(matte), format="gray")
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
            Image.fromarray(to_uint8(matte)).save(tmp / names[-1], format="PNG")
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


def inspect_video(src: Path) -> dict:
    """A video's container header and first frame (nothing more is decoded): UserError when it
    cannot be opened, has no video stream or no decodable frame."""
    av = require("av", "video", "to read and write video")
    container = _open_video(av, src)
    try:
        if not container.streams.video:
            raise UserError(f"{src} has no video stream", "pass a video file")
        stream = container.streams.video[0]
        if next(_frames(av, container, stream, src, _Tally()), None) is None:
            raise _no_frames(src)
        rate = Fraction(stream.average_rate or stream.guessed_rate or Fraction(25))
        frames, seconds, _ = _expected(av, container, stream, rate)
        return {"kind": "video", "width": stream.width, "height": stream.height, "rate": float(rate),
                "frames": frames, "seconds": seconds}
    finally:
        container.close()
