"""`xopt run demucs DIR -o OUT [--ray]`: three short tracks and one corrupt file give twelve stems,
the corrupt file listed and exit 3, in this process and through Ray Data actors alike; re-runs
skip what is done; a file xopt did not write is never overwritten without --force."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from hardening._support import cli, debris

pytest.importorskip("onnxruntime")
pytest.importorskip("demucs")
sf = pytest.importorskip("soundfile")

STEMS = ("drums", "bass", "other", "vocals")


def _stems(out):
    return sorted(str(p.relative_to(out)) for p in out.rglob("*.wav"))


def _expected():
    return sorted(f"track{i}/{s}.wav" for i in range(3) for s in STEMS)


def test_a_folder_in_process_gives_twelve_stems_lists_the_corrupt_file_and_exits_3(art, tracks, tmp_path):
    out = tmp_path / "stems"
    r = cli("run", "demucs", tracks, "-o", out, "--artifacts", art)
    assert r.rc == 3, r.err
    assert _stems(out) == _expected()
    assert "failed: " in r.err and "broken.wav" in r.err and "3 of 4 file(s) done" in r.err
    record = json.loads((out / "batch.json").read_text())
    failed = [k for k, v in record["items"].items() if v["status"] == "failed"]
    assert [os.path.basename(k) for k in failed] == ["broken.wav"]
    assert not debris(out) and not list(out.glob(".xopt-batch-*"))
    data, rate = sf.read(out / "track0" / "vocals.wav", always_2d=True)
    assert rate == 44100 and data.shape[1] == 2 and np.isfinite(data).all()

    before = {p: (out / p).stat().st_mtime_ns for p in _stems(out)}
    again = cli("run", "demucs", tracks, "-o", out, "--artifacts", art)
    assert again.rc == 3 and "3 unchanged from an earlier run" in again.err
    assert {p: (out / p).stat().st_mtime_ns for p in _stems(out)} == before


def test_the_same_folder_through_ray_data_actors(art, tracks, tmp_path):
    pytest.importorskip("ray")
    ref, out = tmp_path / "ref", tmp_path / "stems"
    assert cli("run", "demucs", tracks, "-o", ref, "--artifacts", art).rc == 3
    r = cli("run", "demucs", tracks, "-o", out, "--artifacts", art, "--ray", "--workers", "2")
    assert r.rc == 3, r.err
    assert _stems(out) == _expected()
    assert "broken.wav" in r.err and "3 of 4 file(s) done" in r.err and "2 actor(s) with one session each" in r.err
    record = json.loads((out / "batch.json").read_text())
    workers = {v["worker"] for v in record["items"].values() if v["status"] == "ok"}
    assert os.getpid() not in workers, "the files ran in Ray's actors, not here"
    for stem in _expected():  # the same numbers as in this process (one intra-op thread per actor)
        a, _ = sf.read(ref / stem)
        b, _ = sf.read(out / stem)
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert not debris(out)
    assert not _ray_children(), "the embedded Ray outlived the command"


def _ray_children() -> list:
    import psutil

    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and any(k in " ".join(p.cmdline()) for k in (
                    "raylet", "gcs_server", "ray::")):
                out.append(p)
        except psutil.Error:
            pass
    return out


def test_a_glob_and_outputs_xopt_did_not_write(art, tracks, tmp_path):
    out = tmp_path / "stems"
    (out / "track1").mkdir(parents=True)
    mine = out / "track1" / "drums.wav"
    mine.write_bytes(b"my own file")
    r = cli("run", "demucs", str(tracks / "track*.wav"), "-o", out, "--artifacts", art)
    assert r.rc == 3 and "already exists" in r.err and "--force" in r.err
    assert mine.read_bytes() == b"my own file"
    assert not (out / "track1" / "vocals.wav").exists(), "an item's outputs land all together or not at all"
    assert len(_stems(out)) == 8 + 1
    r = cli("run", "demucs", str(tracks / "track*.wav"), "-o", out, "--artifacts", art, "--force")
    assert r.rc == 0, r.err
    assert _stems(out) == _expected() and mine.read_bytes() != b"my own file"


def test_bad_batch_arguments_are_one_line_errors(art, tracks, tmp_path):
    r = cli("run", "demucs", str(tmp_path / "nothing*.wav"), "-o", tmp_path / "o", "--artifacts", art)
    assert r.rc == 1 and "names no files" in r.err
    (tmp_path / "file").write_text("x")
    r = cli("run", "demucs", tracks, "-o", tmp_path / "file", "--artifacts", art)
    assert r.rc == 1 and "is a file" in r.err
    r = cli("run", "demucs", tracks, "-o", tmp_path / "o", "--artifacts", art, "--workers", "2")
    assert r.rc == 1 and "add --ray" in r.err
