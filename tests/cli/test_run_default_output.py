"""`xopt run MODEL FILE` without -o: each model's pipeline names its outputs under outputs/MODEL."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xopt.cli.cmd_run import _default_output
from xopt.registry import get_model


def _args(src: Path) -> argparse.Namespace:
    return argparse.Namespace(ray=False, input=str(src))


def test_modnet_still_goes_to_the_folder_and_a_video_to_an_mp4(tmp_path):
    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(photo)
    clip = tmp_path / "clip.mov"
    clip.write_bytes(b"\x00" * 64)  # not an image: the video branch (check_input judges the bytes later)
    spec = get_model("modnet")
    assert _default_output(spec, photo, _args(photo)) == Path("outputs/modnet")
    assert _default_output(spec, clip, _args(clip)) == Path("outputs/modnet/clip.mp4")


def test_demucs_stems_go_to_a_folder_named_after_the_track(tmp_path):
    pytest.importorskip("demucs")
    song = tmp_path / "song.wav"
    song.write_bytes(b"RIFF")
    assert _default_output(get_model("demucs"), song, _args(song)) == Path("outputs/demucs")


def test_openfold_structure_is_named_after_the_sequence_file(tmp_path):
    pytest.importorskip("openfold")
    fasta = tmp_path / "ubq.fasta"
    fasta.write_text(">ubq\nMQIFVKTL\n")
    assert _default_output(get_model("openfold"), fasta, _args(fasta)) == Path("outputs/openfold/ubq.pdb")


def test_many_files_and_a_missing_file_get_the_folder(tmp_path):
    spec = get_model("modnet")
    assert _default_output(spec, tmp_path, _args(tmp_path)) == Path("outputs/modnet")
    missing = tmp_path / "nope.png"
    assert _default_output(spec, missing, _args(missing)) == Path("outputs/modnet")
