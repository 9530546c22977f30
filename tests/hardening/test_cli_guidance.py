"""Errors that name the fix: misspelt names get a suggestion, a file that is not an image says
so (also without the video extra), a missing model extra is one line, and `xopt run` builds the
export it needs instead of failing on a fresh checkout."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ._support import assert_user_error, cli, cli_process

pytest.importorskip("onnxruntime")


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("args, needle", [
    (["export", "modnett"], "unknown model 'modnett' (did you mean 'modnet'?)"),
    (["run", "MODNet", "x.png", "-o", "m.png"], "unknown model 'MODNet' (did you mean 'modnet'?)"),
    (["profile", "demucs", "--backend", "ORT-CPU"], "unknown backend 'ORT-CPU' (did you mean 'ort-cpu'?)"),
])
def test_unknown_names_get_a_case_insensitive_suggestion(args, needle, tmp_path):
    assert_user_error(cli(*args, "--out", tmp_path / "o") if args[0] == "profile" else cli(*args), needle)


def test_a_text_file_is_not_an_image_even_without_the_video_extra(modnet_export, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# not a picture\n")
    r = cli_process("run", "modnet", readme, "-o", tmp_path / "m.png", "--artifacts", modnet_export,
                    setup="import sys; sys.modules['av'] = None")
    assert_user_error(r, "README.md is neither an image nor a video", "pass an image")
    assert "av is not installed" not in r.err


def test_a_missing_model_extra_is_one_line(tmp_path):
    song = tmp_path / "song.wav"
    song.write_bytes(b"RIFF" + bytes(100))
    r = cli_process("run", "demucs", song, "-o", tmp_path / "stems", "--artifacts", tmp_path / "art",
                    setup="import sys\nfor m in ('demucs', 'soundfile', 'soxr'): sys.modules[m] = None")
    assert_user_error(r, 'pip install "xopt[demucs]"')
    assert "Traceback" not in r.err


def test_run_exports_the_variant_it_needs_and_says_so(photo, tmp_path):
    art = tmp_path / "fresh"
    # a child process: the exporters' C++ and torch log lines go to file descriptor 2 itself
    # ... and says so in xopt's lines only: what the exporters print (here a C-level write to
    # file descriptor 2 and a library's logging warning, as torch's dynamo exporter and
    # onnxscript's optimiser print for Demucs) goes to the export log
    setup = f"""
        import logging, os
        os.environ['XOPT_CACHE_DIR'] = {str(tmp_path / 'cache')!r}
        import xopt.export.pipeline as pipeline
        real = pipeline.export_model
        def chatty(*a, **k):
            os.write(2, b"W1201 torch/onnx/_internal/exporter: torchvision is not installed\\n")
            logging.getLogger("onnxscript").warning("Skipping constant folding for op Split")
            return real(*a, **k)
        pipeline.export_model = chatty
    """
    r = cli_process("run", "modnet", photo, "-o", tmp_path / "m.png", "--artifacts", art, setup=setup, timeout=600)
    assert r.rc == 0, r.err
    assert (art / "manifest.json").is_file() and (art / "modnet_fp32.onnx").is_file()
    assert Image.open(tmp_path / "m.png").size == (64, 48)
    (log,) = (art / "logs").glob("run-*.log")  # the run's own log, beside the export it made
    assert "torchvision is not installed" in log.read_text() and "Skipping constant folding" in log.read_text()
    assert "torchvision" not in r.err and "Skipping" not in r.err, r.err
    assert f"log: {log} (" in r.err and "lines of third-party output)" in r.err


def test_an_existing_output_names_the_run_flag(modnet_export, photo, tmp_path):
    (tmp_path / "m.png").write_bytes(b"mine")
    r = cli("run", "modnet", photo, "-o", tmp_path / "m.png", "--artifacts", modnet_export)
    assert_user_error(r, "already exists", "choose another -o/--output")


def test_profile_shows_the_models_label_free_checks(modnet_export, tmp_path):
    import json

    r = cli("profile", "modnet", "--variants", "fp32", "--artifacts", modnet_export, "--out", tmp_path / "rep",
            "--frames", "1", "--height", "64", "--width", "64")
    assert r.rc == 0, r.err
    (res,) = json.loads((tmp_path / "rep" / "report.json").read_text())["results"]
    names = {c["name"] for c in res["label_free_checks"]}
    assert {"matte coverage", "undecided pixels"} <= names
