"""Any ONNX model, no model spec: `xopt profile model.onnx` and `xopt compare A B`, like trtexec and
Polygraphy, on graphs written here (not one of xopt's three models)."""
from __future__ import annotations

import json

import pytest

from hardening._support import assert_user_error, cli
from xopt.testing import tiny_conv_onnx, tiny_feeds

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    d = tmp_path_factory.mktemp("graphs")
    return tiny_conv_onnx(d / "net.onnx"), tiny_conv_onnx(d / "net16.onnx", fp16=True)


def test_dynamic_dimensions_without_shapes_are_named(graphs, tmp_path):
    r = cli("profile", graphs[0], "--out", tmp_path / "rep")
    assert_user_error(r, "input x has dynamic dimensions", "pass --shapes x:")
    assert not (tmp_path / "rep").exists()


@pytest.mark.parametrize("shapes, needle", [("x:1x3", "does not match the graph's x"), ("y:1x3x8x8", "does not take"),
                                            ("x1x3", "bad --shapes entry")])
def test_bad_shapes_are_one_line_errors(graphs, tmp_path, shapes, needle):
    assert_user_error(cli("profile", graphs[0], "--shapes", shapes, "--out", tmp_path / "rep"), needle)


def test_profile_an_onnx_file_with_a_per_node_breakdown(graphs, tmp_path):
    r = cli("profile", graphs[0], "--shapes", "x:2x3x48x40", "--frames", "5", "--out", tmp_path / "rep",
            "--val-range", "[-1,1]")
    assert r.rc == 0, r.err
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    (res,) = rep["results"]
    assert rep["settings"]["inputs"] == {"x": [2, 3, 48, 40]} and rep["settings"]["generic"]
    assert rep["weights"]["kind"] == "unknown" and res["latency_ms"]["n"] == 5 and res["memory"]["peak_mb"] > 0
    ops = {o["op"] for o in res["breakdown"]["top_ops"]}
    assert "Conv" in ops and res["breakdown"]["top_nodes"][0]["ms_per_run"] > 0
    assert abs(sum(o["share"] for o in res["breakdown"]["top_ops"]) - 1.0) < 1e-6
    assert "Per-node time (ONNX Runtime profiler)" in (tmp_path / "rep" / "report.md").read_text()
    assert "time by operator: Conv" in r.out


def test_compare_reports_the_drift_of_an_fp16_conversion(graphs, tmp_path):
    a, b = graphs
    r = cli("compare", a, b, "--shapes", "x:1x3x32x32", "--frames", "3", "--out", tmp_path / "cmp")
    assert r.rc == 3 and "FAILED: net16 vs net" in r.out  # FP16 is not within Polygraphy's default 1e-5
    rep = json.loads((tmp_path / "cmp" / "report.json").read_text())
    d = rep["results"][1]["drift"]["tensor"]["y"]
    assert 0 < d["max_abs"] < 0.05 and d["cosine"] > 0.999 and rep["results"][1]["precision"] == "fp16"
    r = cli("compare", a, b, "--shapes", "x:1x3x32x32", "--frames", "3", "--out", tmp_path / "cmp", "--atol", "0.05")
    assert r.rc == 0 and "PASSED" in r.out
    assert cli("report", tmp_path / "cmp" / "report.json", tmp_path / "cmp" / "report.json").rc == 0


def test_user_inputs_drive_the_generic_profile(graphs, tmp_path):
    pytest.importorskip("polygraphy")
    from xopt.runtime.polygraphy_io import save_inputs

    save_inputs(tiny_feeds(2, hw=24), tmp_path / "in.json")
    r = cli("profile", graphs[0], "--inputs", tmp_path / "in.json", "--frames", "2", "--out", tmp_path / "rep")
    assert r.rc == 0, r.err
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["settings"]["inputs"] == {"x": [1, 3, 24, 24]}
