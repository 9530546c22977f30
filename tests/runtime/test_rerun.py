"""`xopt run demucs song.wav -o stems/` twice: the second run replaces the stems the first one
wrote (as reports are replaced), while a stem that is not xopt's (written by someone else, or
edited since) is kept unless --force; and the run says which variant, backend and weights ran."""
from __future__ import annotations

import pytest

from hardening._support import assert_user_error, cli

pytest.importorskip("onnxruntime")
pytest.importorskip("demucs")
sf = pytest.importorskip("soundfile")

STEMS = ("drums", "bass", "other", "vocals")


def test_a_rerun_replaces_its_own_stems_and_keeps_a_foreign_one(art, tracks, tmp_path):
    song, out = tracks / "track0.wav", tmp_path / "stems"
    first = cli("run", "demucs", song, "-o", out, "--artifacts", art)
    assert first.rc == 0, first.err
    stems = [out / "track0" / f"{s}.wav" for s in STEMS]
    assert first.out.split() == [str(p) for p in stems]
    assert f"ran demucs fp32 on ort-cpu from {art}, seeded-random weights (seed 0)" in first.err
    before = {p: p.stat().st_mtime_ns for p in stems}
    again = cli("run", "demucs", song, "-o", out, "--artifacts", art)  # the same command again: it works
    assert again.rc == 0, again.err
    assert all(p.stat().st_mtime_ns != before[p] for p in stems)  # rewritten, not skipped
    data, rate = sf.read(stems[0])
    assert rate == 44100 and data.shape[1] == 2

    stems[1].write_bytes(b"the user's own bass")  # edited since xopt wrote it: no longer xopt's
    r = cli("run", "demucs", song, "-o", out, "--artifacts", art)
    assert_user_error(r, "bass.wav already exists", "-o/--output")
    assert stems[1].read_bytes() == b"the user's own bass"
    r = cli("run", "demucs", song, "-o", out, "--artifacts", art, "--force")
    assert r.rc == 0, r.err
    assert stems[1].read_bytes() != b"the user's own bass"
