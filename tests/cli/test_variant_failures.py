"""A variant that fails its gate is a result, never a crash: the export keeps what passed and
records the failure, a re-export with the same settings says so at once, and profile, bench and
eval show it as a row beside the variants that ran (exit 3 throughout). MODNet on a 128x128
device profile, so every gated build is cheap."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")


def xopt(*args, cwd):
    """The real CLI in a child process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "xopt.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "COLUMNS": "200"}, timeout=1200)

SMALL = """
name = "small"
description = "the default GPU profile at 128x128 for MODNet (fast gates in tests)"
kind = "gpu"
[device]
memory_mb = 12288
headroom = 0.15
precisions = ["fp32", "fp16", "int8"]
[targets]
max_height = 4320
max_width = 7680
[targets.modnet]
fps = 30.0
height = 128
width = 128
"""


@pytest.fixture()
def small(tmp_path):
    path = tmp_path / "small.toml"
    path.write_text(SMALL, encoding="utf-8")
    return str(path)


def _manifest(d):
    return json.loads((d / "manifest.json").read_text(encoding="utf-8"))


def test_an_unreachable_gate_keeps_the_variants_that_passed(tmp_path, small):
    fast = ["--int8-gated-calibrate-methods", "minmax", "--int8-gated-per-channel", "true",
            "--int8-gated-max-fp32-groups", "1", "--int8-gated-speed-runs", "0", "--int8-gated-speed-rounds", "2"]
    args = ["export", "modnet", "--fp16", "--int8", "--max-drop", "0", "--profile", small, "--out", "a", *fast]
    r = xopt(*args, cwd=tmp_path)
    assert r.returncode == 3, r.stderr[-2000:]
    out = tmp_path / "a"
    assert (out / "modnet_fp32.onnx").is_file() and (out / "modnet_fp16.onnx").is_file()
    assert not (out / "modnet_int8.onnx").exists()
    m = _manifest(out)
    assert [v["name"] for v in m["variants"]] == ["fp32", "fp16"]
    (failed,) = m["failed"]
    assert failed["name"] == "int8" and failed["stage"] == "gate"
    assert "no mix of precisions meets the gate mae drop <= 0" in failed["error"]
    best = failed["facts"]["best"]
    assert best["value"] > 0 and best["fp32_groups"] <= 1 and best["speed"]["rounds"] == 2
    assert "int8: FAILED its gate check, not written" in r.stdout and "exit 3" in r.stdout
    assert "Traceback" not in r.stderr
    # the same request again: the recorded failure, without building anything
    again = xopt(*args, cwd=tmp_path)
    assert again.returncode == 3
    assert "failed with the same settings in an earlier export" in again.stderr
    assert _manifest(out)["failed"] == m["failed"]


def test_profile_and_bench_show_a_variant_that_failed_at_export(tmp_path, small):
    """profile and bench run what the export holds: a variant whose export failed is a row that
    says why (not rebuilt with other settings behind the user's back), the others are measured."""
    r = xopt("export", "modnet", "--int8", "--max-drop", "0", "--int8-gated-max-fp32-groups", "0",
             "--int8-gated-calibrate-methods", "minmax", "--int8-gated-per-channel", "true",
             "--profile", small, "--out", "a", cwd=tmp_path)
    assert r.returncode == 3, r.stderr[-2000:]
    record = _manifest(tmp_path / "a")["failed"][0]
    assert record["name"] == "int8" and record["facts"]["gate_evaluations"] == 1  # nothing could fall back
    p = xopt("profile", "modnet", "--variants", "fp32,int8", "--artifacts", "a", "--profile", small,
             "--frames", "2", "--previews", "0", "--out", "r", cwd=tmp_path)
    assert p.returncode == 3, p.stderr[-2000:]
    report = json.loads((tmp_path / "r" / "report.json").read_text(encoding="utf-8"))
    rows = {x["variant"]: x for x in report["results"]}
    assert rows["fp32"]["error"] is None and rows["fp32"]["latency_ms"]["p50"] > 0
    assert rows["int8"]["error"].startswith("not built: ") and rows["int8"]["export_failure"]["stage"] == "gate"
    assert "int8 — FAILED: not built" in (tmp_path / "r" / "report.md").read_text(encoding="utf-8")
    assert "could not be built" in p.stdout
    b = xopt("bench", "modnet", "--variants", "fp32,int8", "--artifacts", "a", "--profile", small, "--frames", "2",
             cwd=tmp_path)
    assert b.returncode == 3, b.stderr[-2000:]
    assert "FAILED: int8 was not built" in b.stdout
    run = xopt("run", "modnet", "x.png", "-o", "m.png", "--variant", "int8", "--artifacts", "a", cwd=tmp_path)
    assert run.returncode != 0 and "x.png" in run.stderr  # the missing input is named first
