"""No room to write: a full disk (a real tiny tmpfs, where this machine lets us mount one) and
a file-size limit (RLIMIT_FSIZE, anywhere on Linux; writes then fail with EFBIG). Either is
one line naming the problem and the fix, and leaves no half-written artifact and no manifest
that names a missing file. (Out of memory while profiling: tests/runtime/test_profiler_oom.py.)"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ._support import TOY, assert_user_error, cli_process, debris, snapshot

pytest.importorskip("onnxruntime")
pytest.importorskip("torch")

# Imported before the cap: the limit is for what xopt writes, not for Python's byte-code cache.
FSIZE = """
import resource, signal
import torch, onnx, onnxruntime, onnxslim, PIL.PngImagePlugin
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.RLIM_INFINITY))
"""


@contextlib.contextmanager
def tmpfs(path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip() or 'not root'}); "
                    "the RLIMIT_FSIZE tests cover the same paths")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(directory):
    """Take every free byte of the file system `directory` is on."""
    with open(directory / "filler", "wb", buffering=0) as fh, contextlib.suppress(OSError):
        while True:
            fh.write(b"\0" * 4096)


@pytest.mark.skipif(sys.platform != "linux" or os.geteuid() != 0, reason="mounting a tmpfs needs root on Linux")
@pytest.mark.parametrize("size", ["8k", "16k"])  # full during the ONNX export / while the manifest is written
def test_disk_full_during_a_new_export(size, tmp_path):
    with tmpfs(tmp_path / "disk", size) as disk:
        r = cli_process("export", "toy", "--out", disk / "art", setup=TOY)
        line = assert_user_error(r, "free some space")
        assert "disk filled up" in line or "no room left" in line
        assert os.listdir(disk) == []  # no artifact, no manifest, not even the directory


@pytest.mark.skipif(sys.platform != "linux" or os.geteuid() != 0, reason="mounting a tmpfs needs root on Linux")
def test_disk_full_while_adding_a_variant_keeps_the_export(tmp_path):
    with tmpfs(tmp_path / "disk", "256k") as disk:
        assert cli_process("export", "toy", "--out", disk / "art", setup=TOY).rc == 0
        before = snapshot(disk / "art")
        _fill(disk)
        r = cli_process("export", "toy", "--int8", "--out", disk / "art", setup=TOY)
        assert_user_error(r, "free some space")
        assert snapshot(disk / "art") == before and not debris(disk)


@pytest.mark.parametrize("limit", [1000, 4000])
def test_file_size_limit_during_export(limit, tmp_path):
    r = cli_process("export", "toy", "--fp16", "--out", tmp_path / "art", setup=TOY + FSIZE.format(limit=limit))
    line = assert_user_error(r, "File too large", "free some space")
    assert "toy" not in line.split(";")[1]  # the fix is about space, not about the model
    assert not (tmp_path / "art").exists()


def _video(path, frames=3):
    import av

    c = av.open(str(path), "w")
    s = c.add_stream("ffv1", rate=25)
    s.width, s.height, s.pix_fmt = 64, 64, "yuv444p"
    rng = np.random.default_rng(0)
    for _ in range(frames):
        frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (64, 64, 3), np.uint8), format="rgb24")
        c.mux(s.encode(frame.reformat(format="yuv444p")))
    c.mux(s.encode(None))
    c.close()
    return path


@pytest.mark.parametrize("output", ["matte.png", "matte.mkv", "frames"])
def test_file_size_limit_while_writing_mattes(output, modnet_export, tmp_path):
    from PIL import Image

    (tmp_path / "in").mkdir()
    if output == "matte.png":
        src = tmp_path / "in" / "photo.png"
        Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8)).save(src)
    else:
        pytest.importorskip("av")
        src = _video(tmp_path / "in" / "clip.mkv")
    before = snapshot(tmp_path / "in")
    r = cli_process("run", "modnet", src, "-o", tmp_path / "out" / output, "--artifacts", modnet_export,
                    setup=FSIZE.format(limit=300))
    assert_user_error(r, "no room left to write", "File too large", "free some space")
    assert not (tmp_path / "out" / output).exists() and not debris(tmp_path)
    assert snapshot(tmp_path / "in") == before
    assert json.loads((modnet_export / "manifest.json").read_text())["model"] == "modnet"
