"""The profiler's budget checks on a GPU that is not the profile's: an H100's speed never passes
(or fails) an RTX 3060's 30 fps target; on the profile's own card it is judged. NVML's GPU list
is the fact stood in (tests/fake_gpu.py style); the checks are the profiler's own."""
from __future__ import annotations

import dataclasses

import pytest

from toy_model import ensure_registered
from xopt import machine
from xopt.analysis.profiler import _budget
from xopt.profiles import get_profile

H100 = {"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_mb": 81559.0, "compute_capability": "9.0", "driver": "580"}
LAPTOP = {"index": 0, "name": "NVIDIA GeForce RTX 3060 Laptop GPU", "memory_mb": 12288.0, "compute_capability": "8.6",
          "driver": "580"}


def _result(fps: float, kind="vram-nvml", method="nvml-process"):
    return {"precision": "fp16", "memory": {"kind": kind, "method": method, "peak_mb": 900.0}, "fps": fps,
            "fps_e2e": None, "drift_gate": {"key": "mae", "passed": True, "text": "mae 0.001"}}


@pytest.fixture
def profile():
    p = get_profile("rtx3060-laptop-12gb")
    return dataclasses.replace(p, targets={**p.targets, "toy": {"fps": 30.0}})


def _throughput(budget):
    return next(c for c in budget["checks"] if c["name"].startswith("throughput"))


def test_an_h100_does_not_judge_the_3060_target(monkeypatch, profile):
    monkeypatch.setattr(machine, "gpus", lambda: [H100])
    budget = _budget(ensure_registered(), profile, _result(fps=900.0), on_gpu=True)
    check = _throughput(budget)
    assert check["passed"] is None and check["status"] == (
        "not measured here (measured on NVIDIA H100 80GB HBM3, not the profile's NVIDIA GeForce RTX 3060 Laptop GPU)")
    mem = next(c for c in budget["checks"] if c["name"].startswith("memory"))
    assert mem["name"] == "memory within budget [VRAM (nvml-process)]" and mem["passed"] is True


@pytest.mark.parametrize("fps, passed", [(45.0, True), (12.0, False)])
def test_the_profiles_own_gpu_judges_it(monkeypatch, profile, fps, passed):
    monkeypatch.setattr(machine, "gpus", lambda: [LAPTOP])
    assert _throughput(_budget(ensure_registered(), profile, _result(fps), on_gpu=True))["passed"] is passed


def test_a_cpu_backend_on_a_gpu_machine_is_not_judged_either(monkeypatch, profile):
    monkeypatch.setattr(machine, "gpus", lambda: [LAPTOP])
    budget = _budget(ensure_registered(), profile, _result(45.0, "host-rss", "host-rss"), on_gpu=False)
    assert _throughput(budget)["status"].endswith("a CPU backend on a GPU machine)")
    assert "host RSS, a proxy for VRAM" in budget["checks"][1]["name"]
