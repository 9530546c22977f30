"""Polygraphy interop: files the polygraphy CLI itself accepts, and Comparator-based comparisons."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xopt.errors import UserError
from xopt.testing import tiny_conv_onnx, tiny_feeds, tiny_qdq_onnx

pytest.importorskip("polygraphy")
ort = pytest.importorskip("onnxruntime")
from xopt.runtime import polygraphy_io as pio  # noqa: E402


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    d = tmp_path_factory.mktemp("pg")
    fp32 = tiny_conv_onnx(d / "fp32.onnx")
    return {"fp32": fp32, "int8": tiny_qdq_onnx(fp32, d / "int8.onnx")}


def _ort_outputs(path, feeds):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [{"y": sess.run(None, f)[0]} for f in feeds]


def _polygraphy_cli() -> list[str]:
    exe = Path(sys.executable).with_name("polygraphy")
    return [str(exe)] if exe.exists() else [shutil.which("polygraphy") or "polygraphy"]


def test_inputs_and_outputs_round_trip(tmp_path):
    feeds = tiny_feeds(2, hw=16)
    pio.save_inputs(feeds, tmp_path / "in.json")
    back = pio.load_inputs(tmp_path / "in.json")
    assert len(back) == 2 and np.array_equal(back[1]["x"], feeds[1]["x"]) and back[0]["x"].dtype == np.float32
    pio.save_outputs([{"y": np.ones((1, 2), np.float16)}], tmp_path / "out.json", runner_name="mine")
    results = pio.load_outputs(tmp_path / "out.json")
    assert list(results.keys()) == ["mine"] and results["mine"][0]["y"].dtype == np.float16


def test_existing_files_need_force(tmp_path):
    pio.save_inputs(tiny_feeds(1), tmp_path / "in.json")
    with pytest.raises(UserError, match="already exists"):
        pio.save_inputs(tiny_feeds(1), tmp_path / "in.json")
    pio.save_inputs(tiny_feeds(1), tmp_path / "in.json", force=True)


def test_bad_files_are_user_errors(tmp_path):
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot read Polygraphy"):
        pio.load_outputs(tmp_path / "junk.json")
    (tmp_path / "dict.json").write_text('{"a": 1}')
    with pytest.raises(UserError, match="not a Polygraphy inputs file"):
        pio.load_inputs(tmp_path / "dict.json")
    with pytest.raises(UserError, match="does not exist"):
        pio.load_inputs(tmp_path / "missing.json")


def test_polygraphy_cli_accepts_the_files_and_checks_the_numbers(graphs, tmp_path):
    feeds = tiny_feeds(2, hw=16)
    outs = _ort_outputs(graphs["fp32"], feeds)
    pio.save_inputs(feeds, tmp_path / "inputs.json")
    pio.save_outputs(outs, tmp_path / "outputs.json")
    pio.save_outputs([{"y": o["y"] + 0.05} for o in outs], tmp_path / "shifted.json")
    base = _polygraphy_cli() + ["run", str(graphs["fp32"]), "--onnxrt", "--load-inputs", str(tmp_path / "inputs.json")]
    good = subprocess.run(base + ["--load-outputs", str(tmp_path / "outputs.json")], capture_output=True, text=True,
                          timeout=300)
    assert good.returncode == 0, good.stdout[-2000:] + good.stderr[-2000:]
    assert "PASSED" in good.stdout + good.stderr
    bad = subprocess.run(base + ["--load-outputs", str(tmp_path / "shifted.json"), "--atol", "1e-3", "--rtol", "1e-3"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "FAILED" in bad.stdout + bad.stderr


def test_files_polygraphy_wrote_load_back(graphs, tmp_path):
    proc = subprocess.run(_polygraphy_cli() + ["run", str(graphs["fp32"]), "--onnxrt", "--input-shapes", "x:[1,3,8,8]",
                                               "--save-inputs", str(tmp_path / "i.json"),
                                               "--save-outputs", str(tmp_path / "o.json")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    feeds = pio.load_inputs(tmp_path / "i.json")
    results = pio.load_outputs(tmp_path / "o.json")
    (runner, iterations), = results.items()
    np.testing.assert_allclose(iterations[0]["y"], _ort_outputs(graphs["fp32"], feeds)[0]["y"], atol=1e-6)


def test_compare_artifacts_passes_for_the_same_graph_through_two_runners(graphs):
    summary = pio.compare_artifacts(graphs["fp32"], graphs["fp32"], tiny_feeds(2, hw=16), backend_b="ort-cpu")
    (pair,) = summary["pairs"]
    assert summary["passed"] and pair["iterations"] == 2 and pair["outputs"]["y"]["max_abs"] <= 1e-6
    assert pair["b"].endswith("[ort-cpu]")


def test_compare_artifacts_measures_int8_drift_and_saves_cli_files(graphs, tmp_path):
    feeds = tiny_feeds(2, hw=16)
    strict = pio.compare_artifacts(graphs["fp32"], graphs["int8"], feeds, atol=1e-4, rtol=1e-4,
                                   save_dir=tmp_path / "cmp")
    y = strict["pairs"][0]["outputs"]["y"]
    expected = max(np.abs(a["y"] - b["y"]).max() for a, b in zip(_ort_outputs(graphs["fp32"], feeds),
                                                                  _ort_outputs(graphs["int8"], feeds)))
    assert not strict["passed"] and y["max_abs"] == pytest.approx(float(expected), rel=1e-5) and y["max_abs"] > 1e-4
    loose = pio.compare_artifacts(graphs["fp32"], graphs["int8"], feeds, atol=0.5, rtol=0.5)
    assert loose["passed"]
    files = strict["files"]
    assert set(files) == {"inputs", "fp32.onnx", "int8.onnx"}
    proc = subprocess.run(_polygraphy_cli() + ["run", str(graphs["fp32"]), "--onnxrt", "--load-inputs", files["inputs"],
                                               "--load-outputs", files["fp32.onnx"]],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:]


def test_compare_uses_the_non_deprecated_compare_function(graphs, monkeypatch):
    from polygraphy.comparator import CompareFunc

    def deprecated(*a, **k):
        raise AssertionError("CompareFunc.simple is deprecated (removed in Polygraphy 0.60)")

    monkeypatch.setattr(CompareFunc, "simple", staticmethod(deprecated))
    results = pio.run_results({"a": [{"y": np.zeros(3)}], "b": [{"y": np.full(3, 0.5)}]})
    summary = pio.compare(results, atol=0.1, rtol=0.1)
    assert not summary["passed"] and summary["pairs"][0]["outputs"]["y"]["max_abs"] == pytest.approx(0.5)


@pytest.mark.trt
def test_an_engine_without_a_gpu_is_a_clean_user_error(graphs, tmp_path):
    from xopt.machine import gpus
    from xopt.optimize.base import PassContext, get_pass
    from xopt.profiles import get_profile
    from xopt.testing import TINY_SHAPES

    if gpus():
        pytest.skip("a GPU is present")
    ctx = PassContext(model="tiny", profile=get_profile("rtx3060-laptop-12gb"), cache_dir=tmp_path / "cache",
                      engine_shapes=TINY_SHAPES)
    get_pass("engine").apply(graphs["fp32"], tmp_path / "tiny.engine", {"backend": "trt-rtx"}, ctx)
    with pytest.raises(UserError, match="needs an NVIDIA GPU"):
        pio.compare_artifacts(graphs["fp32"], tmp_path / "tiny.engine", tiny_feeds(1))
