"""MODNet against ground truth: the matting benchmarks' errors with known answers, the dataset
layouts and their errors, the label-free checks, and `xopt eval modnet` with the model and
on saved predictions."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from xopt.errors import UserError
from xopt.models.modnet import checks as lf
from xopt.models.modnet import matting_metrics as mm
from xopt.models.modnet.eval_data import read_alpha, read_dataset


def _disc(h=96, w=128, r=30, cy=None, cx=None):
    yy, xx = np.mgrid[:h, :w]
    return (((yy - (cy or h / 2)) ** 2 + (xx - (cx or w / 2)) ** 2) < r * r).astype(np.float32)


def _soft(h=96, w=128):
    yy, xx = np.mgrid[:h, :w]
    return np.clip(1.5 - np.hypot(yy - h / 2, xx - w / 2) / 20, 0, 1).astype(np.float32)


# ---------------------------------------------------------------- metrics, known answers

def test_identical_mattes_have_iou_1_and_zero_errors():
    ref = _soft()
    e = mm.matting_errors(ref, ref)
    assert e["iou"] == 1.0
    assert e["sad"] == e["mse"] == e["mad"] == e["grad"] == e["conn"] == 0.0


def test_constant_offset_gives_the_closed_form_sad_mse_mad():
    ref = np.full((100, 100), 0.3, np.float32)
    pred = ref + 0.1
    e = mm.matting_errors(pred, ref)
    assert e["sad"] == pytest.approx(10000 * 0.1 / 1000, rel=1e-5)  # the benchmarks' SAD is in thousands
    assert e["mse"] == pytest.approx(0.01, rel=1e-4) and e["mad"] == pytest.approx(0.1, rel=1e-4)
    assert e["grad"] == pytest.approx(0.0, abs=1e-9)  # a flat offset has no gradient


def test_trimap_restricts_the_errors_to_the_unknown_band():
    ref = np.zeros((50, 50), np.float32)
    pred = np.ones((50, 50), np.float32)
    trimap = np.zeros((50, 50), np.uint8)
    trimap[:10] = 128  # 500 unknown pixels
    assert mm.sad(pred, ref, trimap) == pytest.approx(0.5)
    assert mm.mse(pred, ref, trimap) == pytest.approx(1.0)
    assert mm.sad(pred, ref) == pytest.approx(2.5)


def test_iou_of_two_overlapping_rectangles():
    a = np.zeros((10, 10)); a[:, :6] = 1  # 60 px
    b = np.zeros((10, 10)); b[:, 4:] = 1  # 60 px, 20 shared
    assert mm.iou(a, b) == pytest.approx(20 / 100)
    assert mm.iou(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0


def test_gradient_and_connectivity_grow_with_the_damage():
    ref = _soft()
    blurred = np.clip(ref + 0.2 * np.sin(np.arange(ref.shape[1]) / 2)[None], 0, 1)
    holes = ref.copy()
    holes[40:56, 54:74] = 0.0  # a hole in the foreground disconnects it
    assert mm.gradient_error(blurred, ref) > mm.gradient_error(ref * 0.99, ref) > 0
    assert mm.connectivity_error(holes, ref) > mm.connectivity_error(ref * 0.99, ref)


def test_dtssd_is_zero_when_the_motion_matches_and_known_when_it_does_not():
    a0, a1 = _disc(cx=50), _disc(cx=54)
    assert mm.dtssd(a1, a0, a1, a0) == 0.0
    # prediction frozen while the reference moves: the error is the reference's own motion
    assert mm.dtssd(a0, a0, a1, a0) == pytest.approx(np.sqrt(np.mean((a1 - a0) ** 2)))


# ---------------------------------------------------------------- layouts and their errors

def _png(path, a):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.rint(np.clip(a, 0, 1) * 255).astype(np.uint8)).save(path)


def _rgb(path, seed=0, h=96, w=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)


def _pairs(root, names=("a", "b")):
    for i, n in enumerate(names):
        _rgb(root / "images" / f"{n}.jpg", i)
        _png(root / "mattes" / f"{n}.png", _disc(r=20 + 5 * i))
    return root


def test_pairs_layout_and_missing_pairs_are_named(tmp_path):
    ds = read_dataset(_pairs(tmp_path), {})
    assert [i.name for i in ds.items] == ["a", "b"] and "whole image" in ds.layout
    _rgb(tmp_path / "images" / "lonely.jpg")
    with pytest.raises(UserError, match="1 images have no matte .*lonely"):
        read_dataset(tmp_path, {})
    ds = read_dataset(tmp_path, {"skip_missing": True})
    assert len(ds.items) == 2 and any("lonely" in n for n in ds.notes)


def test_p3m_style_folders_and_explicit_flags(tmp_path):
    for n in ("x", "y"):
        _rgb(tmp_path / "blurred_image" / f"{n}.jpg")
        _png(tmp_path / "mask" / f"{n}.png", _disc())
    ds = read_dataset(tmp_path, {})
    assert "blurred_image/ + mask/" in ds.layout and len(ds.items) == 2
    ds = read_dataset(None, {"images": str(tmp_path / "blurred_image"), "mattes": str(tmp_path / "mask")})
    assert len(ds.items) == 2
    with pytest.raises(UserError, match="--images and --mattes go together"):
        read_dataset(None, {"images": str(tmp_path / "blurred_image")})


def test_unreadable_matte_names_the_file(tmp_path):
    bad = tmp_path / "m.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(UserError, match="m.png"):
        read_alpha(bad)


def test_palette_masks_count_every_object_as_foreground(tmp_path):
    idx = np.zeros((8, 8), np.uint8); idx[:2] = 1; idx[6:] = 2
    im = Image.fromarray(idx, mode="P"); im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    im.save(tmp_path / "p.png")
    assert read_alpha(tmp_path / "p.png").sum() == 32


def _youtube_vos(root, n_frames=4, annotated=(0, 2, 3)):
    for f in range(n_frames):
        _rgb(root / "JPEGImages" / "v1" / f"{5 * f:05d}.jpg", f)
        if f in annotated:
            _png(root / "Annotations" / "v1" / f"{5 * f:05d}.png", _disc(cx=50 + 2 * f))
    return root


def test_youtube_vos_layout_scores_annotated_frames_and_says_so(tmp_path):
    ds = read_dataset(_youtube_vos(tmp_path), {})
    assert "YouTube-VOS" in ds.layout and ds.items[0].name == "v1" and len(ds.items[0].input) == 4
    assert any("1 frames have no annotation" in n for n in ds.notes)
    (tmp_path / "Annotations" / "v2").mkdir()
    with pytest.raises(UserError, match="annotation folders have no frames .*v2"):
        read_dataset(tmp_path, {})


# ---------------------------------------------------------------- label-free checks

def test_flicker_check_flags_a_matte_that_changes_more_than_the_picture():
    frames = [np.full((32, 32, 3), 120, np.uint8)] * 6  # a still picture
    steady = [_disc(32, 32, 10)] * 6
    flicker = [_disc(32, 32, 10) * (i % 2) for i in range(6)]
    ok = lf.checks(frames, steady, {})
    assert all(c["ok"] for c in ok if c["name"] == "temporal flicker")
    bad = [c for c in lf.checks(frames, flicker, {}) if c["name"] == "temporal flicker"][0]
    assert not bad["ok"] and "flicker" in bad["message"] and bad["value"] == pytest.approx(np.mean(_disc(32, 32, 10)),
                                                                                         rel=1e-3)


def test_mushy_matte_is_flagged_with_its_likely_cause():
    c = {x["name"]: x for x in lf.matte_checks(np.full((20, 20), 0.5))}
    assert not c["undecided pixels"]["ok"] and "normalised" in c["undecided pixels"]["message"]
    assert all(x["ok"] for x in lf.matte_checks(_disc()))


# ---------------------------------------------------------------- xopt eval modnet

def _xopt(*args, cwd):
    return subprocess.run([sys.executable, "-m", "xopt.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "COLUMNS": "250"}, timeout=600)


def test_eval_predictions_equal_to_the_references_score_perfectly(tmp_path):
    root = _pairs(tmp_path / "ds")
    pred = tmp_path / "pred"
    for n in ("a", "b"):
        _png(pred / f"{n}.png", read_alpha(root / "mattes" / f"{n}.png"))
    r = _xopt("eval", "modnet", str(root), "--predictions", str(pred), "--out", str(tmp_path / "rep"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    agg = rep["results"][0]["aggregate"]
    assert rep["kind"] == "eval" and rep["weights"]["kind"] == "none"
    assert agg["iou"] == 1.0 and agg["sad"] == 0.0 and agg["conn"] == 0.0
    assert "iou" in (tmp_path / "rep" / "report.md").read_text()
    (pred / "b.png").unlink()
    r = _xopt("eval", "modnet", str(root), "--predictions", str(pred), "--out", str(tmp_path / "rep2"), cwd=tmp_path)
    assert r.returncode == 1 and "1 of 2 items have no prediction" in r.stderr and "b.png" in r.stderr
    assert not (tmp_path / "rep2").exists()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from xopt.export.pipeline import export_model

    out = tmp_path_factory.mktemp("modnet-art")
    export_model("modnet", ["fp32"], out_dir=out)
    return out


def test_eval_runs_the_model_on_a_video_dataset(exported, tmp_path):
    root = _youtube_vos(tmp_path / "vos", n_frames=3, annotated=(0, 1, 2))
    r = _xopt("eval", "modnet", str(root), "--artifacts", str(exported), "--out", str(tmp_path / "rep"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    res = rep["results"][0]
    assert rep["weights"]["kind"] == "seeded-random" and res["variant"] == "fp32"
    assert 0.0 <= res["aggregate"]["iou"] <= 1.0 and res["aggregate"]["sad"] > 0 and res["aggregate"]["dtssd"] >= 0
    assert res["items"][0]["metrics"]["frames_scored"] == 3
    assert res["speed"]["seconds_per_item"]["p50"] > 0 and res["memory"]["peak_mb"] > 0
    assert any(c["name"] == "temporal flicker" for c in res["items"][0]["checks"])
    assert "seeded-random" in (tmp_path / "rep" / "report.md").read_text()
    # xopt run: the same label-free checks on the matte it wrote, as one-line warnings
    r = _xopt("run", "modnet", str(root / "JPEGImages" / "v1" / "00000.jpg"), "-o", str(tmp_path / "m.png"),
              "--artifacts", str(exported), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.startswith("xopt: warning:")]
    assert warnings and all("(expected with seeded-random weights)" in w for w in warnings), r.stderr


def test_an_unreadable_input_image_stops_the_eval_naming_the_file(exported, tmp_path):
    root = _pairs(tmp_path / "ds")
    (root / "images" / "b.jpg").write_bytes(b"\xff\xd8 truncated")
    r = _xopt("eval", "modnet", str(root), "--artifacts", str(exported), "--out", str(tmp_path / "rep"), cwd=tmp_path)
    assert r.returncode == 1 and "b.jpg" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "rep").exists()
