import json

import pytest

from toy_model import ensure_registered
from xopt.report_schema import validate
from xopt.analysis.profiler import profile_model
from xopt.analysis.report import comparison, render_markdown, write_reports


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    ensure_registered()
    art = tmp_path_factory.mktemp("art")
    return profile_model("toy", ["fp32", "fp16", "int8"], artifacts=art, frames=6)


def test_profile_exports_missing_and_reports_every_field(report):
    validate(report)
    assert report["weights"]["kind"] == "seeded-random"
    assert [r["variant"] for r in report["results"]] == ["fp32", "fp16", "int8"]
    for r in report["results"]:
        assert set(r["latency_ms"]) >= {"p50", "p90", "p95", "p99"}
        assert r["latency_ms"]["n"] == 6 and r["fps"] > 0
        assert set(r["warmup_ms"]) >= {"load", "first_inference"}
        assert r["memory"]["kind"] in ("host-rss", "vram-nvml") and r["memory"]["peak_mb"] > 0
        assert r["budget"]["checks"] and isinstance(r["budget"]["passed"], bool)
        assert "tensor" in r["drift"] and "mae" in r["noise_floor"]
    fp32 = report["results"][0]
    assert fp32["drift"]["mae"] == 0.0, "the FP32 artifact is the baseline itself"
    assert report["results"][2]["drift"]["mae"] > 0.0
    assert report["results"][0]["noise_floor"]["mae"] > 0.0


def test_reports_render_and_compare(report, tmp_path):
    paths = write_reports(report, tmp_path)
    html = paths["html"].read_text()
    assert "Plotly.newPlot" in html and "Latency per frame" in html and "seeded-random" in html
    assert "Verdict" in html and "Ship for" in html
    md = render_markdown(report)
    assert "| variant |" in md and "noise floor" in md.lower()
    again = json.loads(paths["json"].read_text())
    head, rows = comparison([again, again], ["a", "b"])
    assert len(rows) == 6 and rows[0][0] == "a" and "drift" in head
