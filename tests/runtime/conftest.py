"""A tiny Demucs export and three short tracks, shared by the tests that run Demucs on files
(batch runs, re-runs): one export costs about a minute of CPU."""
from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def art(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("demucs")
    from xopt.export.pipeline import export_model

    out = tmp_path_factory.mktemp("demucs-art")
    export_model("demucs", ["fp32"], out_dir=out, config="tiny")
    return out


@pytest.fixture(scope="session")
def tracks(tmp_path_factory):
    sf = pytest.importorskip("soundfile")
    from xopt.models.demucs.synth import generate

    d = tmp_path_factory.mktemp("tracks")
    for i in range(3):
        mix, _ = generate(0.8, seed=i)
        sf.write(d / f"track{i}.wav", mix.T, 44100)
    (d / "broken.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + os.urandom(64))  # a header, then noise
    (d / ".DS_Store").write_bytes(b"\x00")  # hidden files are not inputs
    return d
