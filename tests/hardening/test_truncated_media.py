"""A media file cut off mid-file: what it holds is processed and written, the shortfall is said
on stderr ("read 20 of 50 frames (0.8 s of 2.0 s): the file ends early") and in the batch
record, and `xopt run` exits 3 ("finished, but something failed a check"). The fixtures are
real files made here (PyAV writes the videos, soundfile the audio) with bytes cut off the end."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from ._support import cli_process, debris

pytest.importorskip("onnxruntime")

SHORT = re.compile(r"read (\d+) of (\d+) frames \((\d+\.\d) s of (\d+\.\d) s\): the file ends early")


def _cut(path, keep: float):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    return path


# ---------------------------------------------------------------- video (MODNet)

def _video(path, frames: int = 20, fmt: str = "matroska", codec: str = "ffv1", options=None):
    """`frames` frames of noise at 25 fps (noise: every frame costs about the same bytes)."""
    av = pytest.importorskip("av")
    rng = np.random.default_rng(0)
    c = av.open(str(path), "w", format=fmt, options=options or {})
    s = c.add_stream(codec, rate=25)
    s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
    for _ in range(frames):
        rgb = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        c.mux(s.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")))
    c.mux(s.encode(None))
    c.close()
    return path


def _frames_in(path) -> int:
    import av

    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(c.streams.video[0]))


def _shortfall(err: str) -> tuple[int, int, float, float]:
    lines = [line for line in err.splitlines() if "the file ends early" in line]
    assert len(lines) == 1 and lines[0].startswith("xopt: warning: "), err
    m = SHORT.search(lines[0])
    assert m, lines[0]
    return int(m[1]), int(m[2]), float(m[3]), float(m[4])


@pytest.mark.parametrize("name, fmt, codec, options", [
    ("clip.mkv", "matroska", "ffv1", None),  # the count comes from the duration in the header
    ("clip.mp4", "mp4", "libx264", {"movflags": "faststart"}),  # the index at the front: an exact count
])
@pytest.mark.parametrize("output", ["matte.mkv", "frames"])
def test_a_cut_video_is_matted_as_far_as_it_goes(name, fmt, codec, options, output, modnet_export, tmp_path):
    (tmp_path / "in").mkdir()
    full = _video(tmp_path / "in" / "full.mkv")
    assert _frames_in(full) == 20
    src = _cut(_video(tmp_path / "in" / name, fmt=fmt, codec=codec, options=options), 0.5)
    r = cli_process("run", "modnet", src, "-o", tmp_path / "out" / output, "--artifacts", modnet_export)
    assert r.rc == 3, (r.rc, r.err)
    assert "Traceback" not in r.err
    got, expected, secs, of = _shortfall(r.err)
    assert expected == 20 and of == 0.8 and 4 <= got < 16 and secs == pytest.approx(got / 25, abs=0.05)
    written = tmp_path / "out" / output
    assert (_frames_in(written) if output.endswith(".mkv") else len(list(written.glob("*.png")))) == got
    assert not debris(tmp_path)


def test_a_whole_video_says_nothing_and_exits_0(modnet_export, tmp_path):
    src = _video(tmp_path / "clip.mp4", 12, fmt="mp4", codec="libx264")
    r = cli_process("run", "modnet", src, "-o", tmp_path / "matte.mkv", "--artifacts", modnet_export)
    assert r.rc == 0, r.err
    assert "ends early" not in r.err and _frames_in(tmp_path / "matte.mkv") == 12


def test_a_batch_records_the_cut_file_and_exits_3(modnet_export, tmp_path):
    from PIL import Image

    (tmp_path / "in").mkdir()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(tmp_path / "in" / "whole.png")
    _cut(_video(tmp_path / "in" / "cut.mkv"), 0.5)
    r = cli_process("run", "modnet", tmp_path / "in", "-o", tmp_path / "out", "--artifacts", modnet_export)
    assert r.rc == 3, (r.rc, r.err)
    got, expected, _, _ = _shortfall(r.err)
    assert "2 of 2 file(s) done (1 of them failed a check)" in r.err
    record = json.loads((tmp_path / "out" / "batch.json").read_text())
    items = {k.rsplit("/", 1)[-1]: v for k, v in record["items"].items()}
    assert items["whole.png"]["status"] == "ok" and not items["whole.png"]["notes"]
    (note,) = items["cut.mkv"]["notes"]
    assert note["failed"] and f"read {got} of {expected} frames" in note["text"]
    # run again: the whole file is unchanged and skipped, the cut one is run (and reported) again
    r = cli_process("run", "modnet", tmp_path / "in", "-o", tmp_path / "out", "--artifacts", modnet_export)
    assert r.rc == 3 and "1 unchanged from an earlier run" in r.err, r.err


# ---------------------------------------------------------------- audio (Demucs)

sf = pytest.importorskip("soundfile")


def _track(path, seconds: float = 2.0, **kw):
    from xopt.models.demucs.synth import generate

    sf.write(path, generate(seconds, seed=5)[0].T * 0.5, 44100, **kw)
    return path


@pytest.mark.slow  # the tiny Demucs export takes ~30-90 s on two busy cores
@pytest.mark.parametrize("name, kw", [("cut.wav", {"subtype": "PCM_16"}), ("cut.wav", {"subtype": "FLOAT"}),
                                      ("cut.flac", {})])
def test_a_cut_track_is_separated_as_far_as_it_goes(name, kw, demucs_export, tmp_path):
    src = _cut(_track(tmp_path / name, **kw), 0.5)
    r = cli_process("run", "demucs", src, "-o", tmp_path / "stems", "--artifacts", demucs_export)
    assert r.rc == 3, (r.rc, r.err)
    assert "Traceback" not in r.err
    got, expected, secs, of = _shortfall(r.err)
    assert expected == 88200 and of == 2.0 and 0.3 < secs < 1.05
    stems = sorted((tmp_path / "stems" / "cut").glob("*.wav"))
    assert len(stems) == 4 and all(sf.info(p).frames == got for p in stems)
    assert not debris(tmp_path)


@pytest.mark.slow
def test_a_whole_track_exits_0(demucs_export, tmp_path):
    src = _track(tmp_path / "whole.flac", 1.0)
    r = cli_process("run", "demucs", src, "-o", tmp_path / "stems", "--artifacts", demucs_export)
    assert r.rc == 0 and "ends early" not in r.err, r.err
