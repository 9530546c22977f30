"""NaN and Inf: refused on the way in, and a variant that produces them (FP16 overflow) is a
failed drift check in the export gate and in the profile report, never a small error."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from xopt.errors import UserError

from ._support import assert_user_error, cli, debris, snapshot

pytest.importorskip("onnxruntime")


# ---------------------------------------------------------------- NaN/Inf in the input

@pytest.mark.parametrize("bad, needle", [(np.nan, "contains NaN or Inf"), (np.inf, "contains NaN or Inf"),
                                         (3.0, "must hold values in [0, 1]")])
def test_float_image_with_nan_inf_or_out_of_range_values(bad, needle, modnet_export, tmp_path):
    (tmp_path / "in").mkdir()
    src = tmp_path / "in" / "float.tif"
    a = np.random.default_rng(0).uniform(0, 1, (40, 60)).astype(np.float32)
    a[7, 9] = bad
    Image.fromarray(a, mode="F").save(src)
    before = snapshot(tmp_path / "in")
    r = cli("run", "modnet", src, "-o", tmp_path / "matte.png", "--artifacts", modnet_export)
    assert_user_error(r, needle)
    assert not (tmp_path / "matte.png").exists() and snapshot(tmp_path / "in") == before


def test_pipeline_rejects_nan_arrays(modnet_export):
    from xopt.runtime import load_pipeline

    pipe = load_pipeline(modnet_export)
    try:
        image = np.full((64, 64, 3), 0.5, np.float32)
        image[3, 3, 1] = np.nan
        with pytest.raises(UserError, match="NaN or Inf"):
            pipe(image)
        with pytest.raises(UserError, match="NaN or Inf"):
            pipe(np.where(np.isnan(image), -np.inf, image))
    finally:
        pipe.close()


# ---------------------------------------------------------------- NaN/Inf produced by a variant

@pytest.fixture(scope="module")
def overflow():
    pytest.importorskip("torch")
    from hardening.overflow_model import ensure_registered

    return ensure_registered()


def test_overflowing_variant_fails_the_export_gate(overflow, tmp_path):
    """A variant whose outputs overflow is a recorded failure (exit 3), never written; the FP32
    artifact that passed stays as it was."""
    out = tmp_path / "art"
    r = cli("export", "toy-overflow", "--config", "hot", "--out", out)  # FP32 alone passes
    assert r.rc == 0, r.err
    fp32 = (out / "toy-overflow_fp32.onnx").read_bytes()
    r = cli("export", "toy-overflow", "--config", "hot", "--fp16", "--out", out)
    assert r.rc == 3, r.err
    line = next(x for x in r.out.splitlines() if x.startswith("fp16: FAILED"))
    assert "toy-overflow fp16 failed the parity check" in r.out and "max_abs=inf" in r.out and "(NaN/Inf)" in r.out
    assert "max_abs=0" not in line
    assert (out / "toy-overflow_fp32.onnx").read_bytes() == fp32 and not (out / "toy-overflow_fp16.onnx").exists()
    assert not debris(out)
    m = json.loads((out / "manifest.json").read_text())
    assert [v["name"] for v in m["variants"]] == ["fp32"] and m["failed"][0]["stage"] == "parity"
    r = cli("export", "toy-overflow", "--config", "hot", "--fp16", "--out", tmp_path / "fresh")
    assert r.rc == 3 and "(NaN/Inf)" in r.out
    assert not (tmp_path / "fresh" / "toy-overflow_fp16.onnx").exists()


def test_overflowing_variant_is_a_failed_drift_check_in_the_profile(overflow, tmp_path):
    rep = tmp_path / "rep"
    r = cli("profile", "toy-overflow", "--variants", "fp32,fp16", "--artifacts", tmp_path / "art", "--out", rep,
            "--frames", "2", "--no-e2e")
    assert r.rc == 0, r.err
    assert "FAILED" in r.out  # the terminal summary (rich folds the cell text over lines)
    report = json.loads((rep / "report.json").read_text())
    fp32, fp16 = report["results"]
    assert fp32["error"] is None and fp32["drift_ok"] and fp32["drift"]["tensor"]["output"]["finite"]
    assert fp16["error"].startswith("drift check failed: NaN/Inf in output") and "FP32" in fp16["error"]
    assert fp16["drift_ok"] is False and fp16["budget"]["passed"] is False
    tensor = fp16["drift"]["tensor"]["output"]
    assert tensor["finite"] is False and tensor["max_abs"] == float("inf")
    drift_check = [c for c in fp16["budget"]["checks"] if c["name"].startswith("drift")]
    assert drift_check and drift_check[0]["passed"] is False
    assert "FAILED: drift check failed" in (rep / "report.md").read_text()
    r = cli("report", rep / "report.json")
    assert r.rc == 0 and "FAILED" in r.out
