"""The generic side of `xopt eval`: deltas against FP32, variant order, saved-prediction checks,
the versioned report of kind "eval" and its renderings."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from xopt.analysis import eval_runner as er
from xopt.analysis.eval_report import render_html, render_markdown, summary_rows, warning_lines, write_eval_reports
from xopt.errors import UserError
from xopt.report_schema import load, validate
from xopt.spec import EvalItem

METRICS = {"iou": "higher", "sad": "lower"}


def _result(variant, iou, sad, warn=False):
    item = {"name": "a", "metrics": {"iou": iou, "sad": sad}, "notes": [], "seconds": 0.5,
            "checks": [{"name": "coverage", "value": 0.0, "unit": "%", "expected": ">0", "ok": not warn,
                        "message": "" if not warn else "the matte is empty: input not normalised"}]}
    hooks = SimpleNamespace(aggregate=lambda scores: {k: sum(s[k] for s in scores) / len(scores) for k in METRICS})
    return er.result_of(hooks, variant, variant, "ort-cpu", er.MODEL_SOURCE, [item], [0.5], 0.1,
                        {"kind": "host-rss", "peak_mb": 100.0})


def _report(results):
    report = {"schema_version": 1, "kind": "eval", "model": "modnet", "weights": {"kind": "seeded-random", "seed": 0},
              "config": {}, "created": "now", "command": "xopt eval modnet d", "machine": {"cpu": "x", "versions": {}},
              "settings": {"backend": "ort-cpu"}, "dataset": {"layout": "images/ + mattes/", "items": ["a"],
                                                             "notes": [], "method": "m"},
              "metrics": [{"key": k, "better": b} for k, b in METRICS.items()],
              "results": er.with_deltas(results, METRICS), "extra": {}}
    report["head"], report["rows"] = summary_rows(report)
    report["title"] = "t"
    return report


def test_deltas_are_against_fp32_and_marked_worse_in_the_metric_direction():
    rep = _report([_result("fp32", 0.9, 10.0), _result("int8", 0.8, 12.5, warn=True)])
    fp32, int8 = rep["results"]
    assert fp32["delta"] is None
    assert int8["delta"]["iou"] == pytest.approx(-0.1) and int8["delta"]["sad"] == pytest.approx(2.5)
    head, rows = summary_rows(rep)
    assert rows[0][0] == "fp32" and "(-0.1, worse)" in rows[1][2] and "(+2.5, worse)" in rows[1][3]
    assert warning_lines(rep) == ["int8: coverage on a: the matte is empty: input not normalised"]
    md = render_markdown(rep)
    assert "(+2.5, worse)" in md and "seeded-random" in md and "## Per item: int8" in md
    assert "<table>" in render_html(rep) and "seeded-random" in render_html(rep)


def test_fp32_comes_first_and_is_added_when_missing():
    assert er.choose_variants(["int8", "fp16"], None) == ["fp32", "int8", "fp16"]
    assert er.choose_variants(None, None) == ["fp32"]
    manifest = SimpleNamespace(variants=[{"name": "fp16"}, {"name": "fp32"}])
    assert er.choose_variants(None, manifest) == ["fp32", "fp16"]


def test_missing_predictions_are_listed_together(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    hooks = SimpleNamespace(prediction_paths=lambda d, item: [Path(d) / f"{item.name}.png"],
                            read_prediction=lambda d, item: None)
    items = [EvalItem(n, None, None) for n in ("a", "b", "c")]
    with pytest.raises(UserError, match=r"2 of 3 items have no prediction: b: .*b\.png; c: .*c\.png"):
        er.check_predictions(hooks, tmp_path, items, False, [])
    notes = []
    assert [i.name for i in er.check_predictions(hooks, tmp_path, items, True, notes)] == ["a"]
    assert "skipped" in notes[0]


def test_nan_metrics_are_written_as_null_and_the_report_round_trips(tmp_path):
    rep = _report([_result("fp32", float("nan"), 1.0)])
    rep = er.json_safe(rep)
    assert rep["results"][0]["aggregate"]["iou"] is None
    paths = write_eval_reports(rep, tmp_path / "out")
    assert load(paths["json"])["kind"] == "eval"
    assert "NaN" not in paths["json"].read_text()


@pytest.mark.parametrize("breakage, needle", [
    (lambda r: r.pop("dataset"), "dataset"),
    (lambda r: r["metrics"].append({"key": "x", "better": "sideways"}), "better"),
    (lambda r: r["results"][0].update(aggregate={"iou": "high"}), "aggregate"),
    (lambda r: r["results"][0]["items"][0].pop("name"), "name"),
])
def test_a_damaged_eval_report_is_refused_in_one_line(breakage, needle):
    rep = json.loads(json.dumps(_report([_result("fp32", 0.9, 1.0)])))
    breakage(rep)
    with pytest.raises(UserError, match=needle):
        validate(rep)


@pytest.mark.parametrize("args, needle", [(["eval", "--help"], "--predictions"),
                                          (["eval", "demucs", "--help"], "--subset"),
                                          (["eval", "openfold", "--help"], "--chain")])
def test_eval_help_shows_the_models_dataset_flags_without_optional_extras(args, needle):
    import subprocess
    import sys

    blocked = ["museval", "tmtools", "Bio", "pyloudnorm", "soundfile", "onnxruntime", "openfold", "demucs"]
    code = f"import sys\nfor m in {blocked!r}: sys.modules[m] = None\nfrom xopt.cli import main\nsys.exit(main({args!r}))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert needle in r.stdout


def test_an_unknown_layout_is_one_line_naming_the_layouts(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "xopt.cli", "eval", "modnet", str(tmp_path)], capture_output=True,
                       text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "images" in r.stderr and "JPEGImages" in r.stderr


@pytest.mark.parametrize("model", ["modnet", "demucs", "openfold"])
def test_every_eval_hook_reference_resolves(model):
    """The spec names its hooks as "module:attr" strings: a typo would only show on first use."""
    from xopt.registry import get_model
    from xopt.spec import Hook, resolve

    hooks = get_model(model).evaluation
    for name in ("dataset", "predict", "score", "aggregate", "prediction_paths", "read_prediction", "item_checks",
                 "checks", "run_checks"):
        value = getattr(hooks, name)
        assert isinstance(value, Hook) and callable(resolve(value.ref)), name
    assert set(hooks.metrics.values()) <= {"higher", "lower"} and hooks.metrics
