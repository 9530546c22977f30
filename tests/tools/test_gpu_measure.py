"""tools/gpu_measure.py: on a machine without a GPU it measures nothing and says why."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from xopt.machine import gpus

TOOL = Path(__file__).resolve().parents[2] / "tools" / "gpu_measure.py"


@pytest.mark.skipif(bool(gpus()), reason="a GPU is present: the no-GPU answer does not apply")
def test_without_a_gpu_it_says_why_and_writes_nothing(tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, str(TOOL), "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "nothing measured: no NVIDIA GPU" in proc.stderr and "NVML" in proc.stderr
    assert not out.exists()


@pytest.mark.gpu
def test_on_a_gpu_it_measures_a_model_under_the_cap(tmp_path):
    from xopt.registry import list_models

    name = list_models()[0].name
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, str(TOOL), "--models", name, "--iters", "3", "--out", str(out)],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["memory_cap"]["cap_mb"] == 12288 and report["machine"]["gpus"]
    fp32 = report["results"][f"{name} torch fp32"]
    assert fp32["status"] in ("ok", "skipped") and (fp32["status"] != "ok" or fp32["device_ms"]["p50"] > 0)
