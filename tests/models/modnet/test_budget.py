"""MODNet fit to budget: the fitted line against known answers, the resize rule's sizes, one
real measurement, and `xopt fit modnet` end to end."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from xopt.models.modnet import budget
from xopt.models.modnet.budget import (CUDA_CONTEXT_MB, fit_curve, largest_ref, max_ref_allowed, predict_mb,
                                       rule_size)
from xopt.models.modnet.pipeline import MAX_MODEL_PIXELS, model_size
from xopt.profiles import get_profile
from xopt.registry import get_model
from xopt.report_schema import validate

# binary fractions: every prediction below is exact in floating point
A_MB, B_MB_PER_PIXEL, PARAMS = 16.0, 2.0 ** -11, 2 ** 20  # 4 MB of FP32 weights


def synthetic(h: int, w: int, artifact: str | None = None) -> dict:
    """Points on the known line a + b·pixels, as a measurement process returns them."""
    return {"runtime": "onnxruntime" if artifact else "torch", "height": h, "width": w, "pixels": h * w,
            "activation_mb": A_MB + B_MB_PER_PIXEL * h * w, "parameters": PARAMS, "threads": 2}


def test_fit_gives_back_the_line_it_was_measured_on():
    curve = fit_curve([synthetic(h, w) for h, w in budget.POINTS])
    assert curve["a_mb"] == pytest.approx(A_MB, rel=1e-9)
    assert curve["b_mb_per_pixel"] == pytest.approx(B_MB_PER_PIXEL, rel=1e-9)
    assert curve["rms_residual_mb"] == pytest.approx(0.0, abs=1e-9)


def test_fit_keeps_no_negative_term():
    # peaks that fall with size would fit a negative slope: NNLS keeps b at 0 instead
    pts = [{"pixels": p, "activation_mb": m} for p, m in [(1000, 30.0), (2000, 20.0), (3000, 10.0)]]
    curve = fit_curve(pts)
    assert curve["b_mb_per_pixel"] == 0.0 and curve["a_mb"] == pytest.approx(20.0)


def test_largest_size_is_exact_at_the_budget_edge():
    curve = {"a_mb": A_MB, "b_mb_per_pixel": B_MB_PER_PIXEL}

    def predict(h, w):
        return predict_mb(curve, h * w, 0.0, "fp32", False)

    at_1024 = A_MB + 1024 * 1024 * B_MB_PER_PIXEL  # 528 MB exactly
    assert largest_ref(predict, at_1024, (1, 1), 32 * 4096) == 1024
    assert largest_ref(predict, at_1024 - 1e-6, (1, 1), 32 * 4096) == 992
    # 16:9 at ref 768 runs at 768x1344 (1365 floored to a multiple of 32)
    at_768 = A_MB + 768 * 1344 * B_MB_PER_PIXEL
    assert largest_ref(predict, at_768, (16, 9), 32 * 4096) == 768
    assert largest_ref(predict, at_768 - 1e-6, (16, 9), 32 * 4096) == 736
    assert largest_ref(predict, A_MB, (1, 1), 32 * 4096) == 0  # not even 32x32
    assert largest_ref(predict, 1e9, (1, 1), 640) == 640  # the caller's cap


def test_precision_and_gpu_terms_are_the_documented_ones():
    curve = {"a_mb": A_MB, "b_mb_per_pixel": B_MB_PER_PIXEL}
    px = 512 * 512
    fp32 = predict_mb(curve, px, 4.0, "fp32", False)
    assert fp32 == 4.0 + A_MB + px * B_MB_PER_PIXEL
    assert predict_mb(curve, px, 4.0, "fp32", True) == fp32 + CUDA_CONTEXT_MB
    assert predict_mb(curve, px, 4.0, "fp16", True) == fp32 / 2 + CUDA_CONTEXT_MB  # FP16 halves both
    assert predict_mb(curve, px, 4.0, "int8", True) == fp32 + CUDA_CONTEXT_MB  # INT8 counted as FP32


@pytest.mark.parametrize("aspect", [(1, 1), (16, 9), (4, 3)])
def test_rule_sizes_are_the_pipelines_and_multiples_of_32(aspect):
    for ref in range(32, 2048 + 1, 32):
        h, w = rule_size(ref, aspect)
        assert h % 32 == 0 and w % 32 == 0 and h == ref and w >= h
        # the same frame through the pipeline's own rule (an image larger than ref on both sides)
        assert model_size(2 * aspect[1] * ref, 2 * aspect[0] * ref, ref) == (h, w)
    with pytest.raises(ValueError):
        rule_size(500)


def test_limits_are_the_pipelines_and_the_profiles():
    ref, why = max_ref_allowed({}, (16, 9))
    h, w = rule_size(ref, (16, 9))
    nh, nw = rule_size(ref + 32, (16, 9))
    assert why == "pipeline limit" and h * w <= MAX_MODEL_PIXELS < nh * nw
    assert model_size(9 * ref, 16 * ref, ref) == (h, w)  # the pipeline takes it
    assert max_ref_allowed({"max_height": 1080, "max_width": 1920}, (16, 9)) == (1056, "profile max_height")
    assert max_ref_allowed({"max_width": 1920}, (16, 9)) == (1088, "profile max_width")  # 1120 -> 1120x1984
    assert max_ref_allowed({"max_height": 1000}, (1, 1)) == (992, "profile max_height")


def _fit(profile, **options):
    spec = get_model("modnet")
    return spec.fit.search(spec, profile, spec.config(None), {"measure": synthetic, **options})


def test_report_per_variant_on_the_gpu_profile():
    profile = get_profile("rtx3060-laptop-12gb")
    report = _fit(profile, artifacts="/nonexistent")
    validate(report)
    by = {r["variant"]: r for r in report["results"]}
    assert list(by) == ["fp32", "fp16", "int8"]
    w_mb = PARAMS * 4 / 2**20
    assert by["fp32"]["target"]["estimated_peak_mb"] == pytest.approx(
        w_mb + A_MB + 512 * 512 * B_MB_PER_PIXEL + CUDA_CONTEXT_MB, abs=0.05)
    for r in by.values():  # 12 GB holds more than the pipeline takes: the pipeline's limit binds
        assert r["square"]["height"] == 2880 and r["square"]["bound"] == "pipeline limit"
        assert (r["frame_16_9"]["height"], r["frame_16_9"]["width"]) == (2176, 3840)
        assert r["square"]["budget_ref_size"] > 2880 and r["estimated_peak_mb"] <= profile.budget_mb
    budget_alone = by["fp32"]["square"]["budget_ref_size"]
    assert report["extra"]["fit"]["rows"][0][-2:] == [f"{budget_alone}x{budget_alone}", "pipeline"]
    assert by["fp16"]["square"]["budget_ref_size"] > by["fp32"]["square"]["budget_ref_size"]
    assert report["extra"]["choice"]["variant"] == "fp16"
    assert report["extra"]["memory_model"]["onnxruntime"] is None and "seeded-random" in report["settings"]["basis"]
    assert report["weights"]["kind"] == "seeded-random"
    rows = report["extra"]["fit"]["rows"]
    assert all(len(r) == len(report["extra"]["fit"]["head"]) for r in rows)


def test_the_budget_binds_on_a_small_profile():
    profile = dataclasses.replace(get_profile("cpu"), memory_mb=800.0, headroom=0.0)
    report = _fit(profile)
    by = {r["variant"]: r for r in report["results"]}
    assert list(by) == ["fp32", "int8"]  # the CPU profile has no FP16
    sq = by["fp32"]["square"]
    assert sq["bound"] == "budget"

    def mb(h, w):
        return PARAMS * 4 / 2**20 + A_MB + h * w * B_MB_PER_PIXEL

    assert mb(sq["height"], sq["width"]) <= 800.0 < mb(sq["height"] + 32, sq["width"] + 32)
    fr = by["fp32"]["frame_16_9"]
    assert mb(fr["height"], fr["width"]) <= 800.0 < mb(*rule_size(fr["ref_size"] + 32, (16, 9)))
    assert report["extra"]["fit"]["rows"][0][-1] == "budget"
    assert report["extra"]["choice"]["variant"] == "fp32"


def test_a_square_and_a_frame_stopped_by_different_limits_say_so():
    # 2500 px high at most: the 16:9 frame stops at the pipeline's area first, the square at the height
    profile = dataclasses.replace(get_profile("cpu"), targets={"max_height": 2500, "modnet": {}})
    row = _fit(profile)["extra"]["fit"]["rows"][0]
    assert row[2:4] == ["2496x2496", "2176x3840"]
    assert row[-1] == "max_height / pipeline"


def test_nothing_fits_is_a_budget_error():
    from xopt.errors import BudgetError

    with pytest.raises(BudgetError):
        _fit(dataclasses.replace(get_profile("cpu"), memory_mb=10.0, headroom=0.0))


def test_one_real_measurement_in_a_fresh_process():
    pytest.importorskip("torch")
    small = budget._measure_in_subprocess(64, 64)
    big = budget._measure_in_subprocess(192, 192)
    assert small["weights"] == "seeded-random" and small["parameters"] == 6_487_075
    assert small["pixels"] == 64 * 64 and 0 < small["activation_mb"] < big["activation_mb"]
    # the input alone is 12 bytes a pixel and the activations many times that
    assert big["activation_mb"] > 192 * 192 * 12 / 2**20


def _conv_export(directory, config) -> None:
    """A one-Conv graph with MODNet's input and output names and dynamic H x W, under a
    manifest of `config`: what an export of MODNet holds, small enough to measure in a second."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from xopt.manifest import Manifest

    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(64, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["output"], pads=[1, 1, 1, 1])], "conv",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", 64, "h", "w"])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), directory / "modnet_fp32.onnx")
    entry = {"name": "fp32", "precision": "fp32", "path": "modnet_fp32.onnx", "sha256": "-", "opset": 17,
             "inputs": [{"name": "input"}], "outputs": [{"name": "output"}], "parity": {}}
    Manifest(model="modnet", weights={"kind": "seeded-random", "seed": 0}, config=config,
             variants=[entry]).save(directory)


def test_an_export_is_measured_on_onnx_runtime_too(tmp_path):
    pytest.importorskip("onnxruntime")
    _conv_export(tmp_path, get_model("modnet").config(None))
    seen = []

    def measure(h, w, artifact=None):  # torch points synthetic, ORT points real
        seen.append(artifact)
        return budget._measure_in_subprocess(h, w, artifact) if artifact else synthetic(h, w)

    report = _fit(get_profile("cpu"), measure=measure, artifacts=str(tmp_path), points=[(128, 128), (512, 512)])
    validate(report)
    assert seen == [None, None] + [str(tmp_path / "modnet_fp32.onnx")] * 2
    mm = report["extra"]["memory_model"]
    ort = [p for p in mm["points"] if p["runtime"] == "onnxruntime"]
    # the Conv's output alone is 64 channels x 4 bytes a pixel: 64 MB at 512x512
    assert ort[1]["activation_mb"] > 512 * 512 * 64 * 4 / 2**20 > ort[0]["activation_mb"]
    assert mm["onnxruntime"]["b_mb_per_pixel"] > 0
    for key in ("a_mb", "b_mb_per_pixel"):  # the larger line, term by term
        assert mm[key] == max(mm["torch"][key], mm["onnxruntime"][key])
    assert "ONNX Runtime on the export's FP32 graph" in report["settings"]["basis"]
    # an export of another config is not this model's: not measured
    other = tmp_path / "other"
    other.mkdir()
    _conv_export(other, {"preset": "other"})
    seen.clear()
    report = _fit(get_profile("cpu"), measure=measure, artifacts=str(other), points=[(128, 128), (512, 512)])
    assert seen == [None, None] and report["extra"]["memory_model"]["onnxruntime"] is None


def test_xopt_fit_modnet_with_no_flags(tmp_path):
    pytest.importorskip("torch")
    r = subprocess.run([sys.executable, "-m", "xopt.cli", "fit", "modnet"], capture_output=True, text=True,
                       cwd=tmp_path, env={**os.environ, "COLUMNS": "80"}, timeout=900)
    assert r.returncode == 0, f"{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    assert "Traceback" not in r.stderr
    report = json.loads((tmp_path / "reports" / "modnet-fit" / "report.json").read_text(encoding="utf-8"))
    validate(report)
    assert [p["runtime"] for p in report["extra"]["memory_model"]["points"]] == ["torch"] * len(budget.POINTS)
    assert {r["variant"] for r in report["results"]} == {"fp32", "fp16", "int8"}
    assert "max 16:9" in r.stdout and "Fits rtx3060-laptop-12gb" in r.stdout
    assert max(len(line) for line in r.stdout.splitlines()) <= 80  # piped: 80 columns
    assert "│ fp16    │" in r.stdout  # a table, not one block per row
    assert "host peak of one forward at 768x768" in r.stdout + r.stderr
    for name in ("report.md", "report.html"):
        assert (tmp_path / "reports" / "modnet-fit" / name).stat().st_size > 0


def test_without_torch_the_fit_names_the_extra_before_measuring(tmp_path):
    prelude = "import sys; sys.modules['torch'] = None; from xopt.cli import main; sys.exit(main(['fit', 'modnet']))"
    r = subprocess.run([sys.executable, "-c", prelude], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert 'pip install "xopt[export]"' in r.stdout + r.stderr and "torch is not installed" in r.stdout + r.stderr
    assert "host peak" not in r.stdout + r.stderr  # nothing was measured
    assert not (tmp_path / "reports" / "modnet-fit" / "report.json").exists()
