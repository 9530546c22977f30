"""tools/gpu_measure.py. On this CPU machine: its whole run()/main() with torch.cuda and NVML
replaced by small fakes (tests/fake_gpu.py), the device pointed at the CPU, so a missing field,
a wrong order or a crash in the tool's own logic fails here, not in a 15-minute GPU window; its
process-per-job launcher for real; and the no-GPU answer. On a GPU (the window): MODNet measured."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fake_gpu
from toy_model import ensure_registered
from xopt.machine import gpus

TOOL = Path(__file__).resolve().parents[2] / "tools" / "gpu_measure.py"
BUDGET = 12288 * 0.85


def _tool():
    spec = importlib.util.spec_from_file_location("gpu_measure_under_test", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def gm(monkeypatch):
    """The tool, run in this process: the device is the CPU, each job runs through child_main
    here (the fakes do not cross a process boundary; the launcher is tested on its own below)."""
    mod = _tool()

    def in_this_process(job, timeout_s):
        sys.modules["pynvml"].process_mb = 0.0  # a fresh child holds no VRAM yet
        return mod.child_main(job)

    monkeypatch.setattr(mod, "DEVICE", "cpu")
    monkeypatch.setattr(mod, "launch_child", in_this_process)
    ensure_registered()
    import torch

    mm, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    before = mm.fp32_precision, conv.fp32_precision  # the tool sets them for its (stand-in) GPU runs
    yield mod
    mm.fp32_precision, conv.fp32_precision = before


def _fakes(monkeypatch, **nvml_kw):
    nvml = fake_gpu.fake_nvml(fake_gpu.H100, **nvml_kw)
    cuda = fake_gpu.FakeCuda(nvml)
    fake_gpu.install(monkeypatch, nvml, cuda)
    return nvml, cuda


def _overflowing_toy(name: str, fail: bool = False):
    """The toy with a layer whose activations overflow FP16 (65504) but not FP32 or BF16; or one
    whose build fails."""
    toy = ensure_registered()

    def build(checkpoint=None, config=None, seed=0):
        import torch

        if fail:
            raise RuntimeError("weights could not be made")
        built = toy.build(checkpoint, config, seed)
        built.module[0].weight.data.mul_(1e5)  # first conv: |activation| ~1e5, past FP16
        return built

    return dataclasses.replace(toy, name=name, build=build)


def _register(monkeypatch, spec):
    from xopt.registry import MODELS

    MODELS.discover()
    monkeypatch.setitem(MODELS.items, spec.name, spec)


def test_main_with_stubbed_cuda_and_nvml_writes_a_complete_report(gm, monkeypatch, tmp_path, capsys):
    nvml, cuda = _fakes(monkeypatch)
    out = tmp_path / "r.json"
    assert gm.main(["--models", "toy", "--iters", "4", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["complete"] and report["gpu"]["name"] == "NVIDIA H100 80GB HBM3"
    assert report["memory_cap"]["cap_mb"] == pytest.approx(BUDGET)
    assert cuda.fraction == pytest.approx(BUDGET / 81559.0)  # the cap is the profile's budget
    # an H100 is not the profile's RTX 3060 Laptop GPU: its targets are not judged here
    assert not report["profile"]["targets_judged_here"]
    assert "measured on NVIDIA H100 80GB HBM3" in report["profile"]["why_not"]
    assert list(report["results"]) == [f"toy torch {p}" for p in ("fp32", "tf32", "fp16", "bf16")]
    for key, r in report["results"].items():
        assert r["status"] == "ok", (key, r)
        assert r["warmup_runs"] >= 10 and r["device_ms"]["n"] == 4 and r["device_ms"]["p50"] > 0
        mem = r["memory"]
        assert mem["method"] == "nvml-process" and "per-process" in mem["method_note"]
        assert mem["context_mb"] == pytest.approx(520.0) and mem["after_weights_mb"] == pytest.approx(520.0)
        assert mem["process_peak_mb"] == pytest.approx(1900.0) and mem["allocator_peak_mb"] == pytest.approx(700.0)
        assert mem["fits_budget"] and mem["budget_mb"] == pytest.approx(BUDGET)
        assert all(r["finite"].values())
        expect = "tf32" if r["precision"] == "tf32" else "ieee"
        assert r["tf32"] == {"api": "fp32_precision", "matmul": expect, "cudnn_conv": expect}
        keys = list(r)
        if r["precision"] != "fp32":  # drift against this GPU's FP32, before any latency
            assert keys.index("drift_gate") < keys.index("device_ms") and keys.index("drift") < keys.index("host_ms")
            assert r["drift_gate"]["key"] == "mae" and set(r["drift"]) >= {"mae", "iou", "tensor"}
            assert r["drift"]["tensor"]["output"]["finite"]
    # TF32 and FP16 change the numbers; FP32 against itself would not
    assert report["results"]["toy torch fp16"]["drift"]["mae"] > 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("toy torch fp16")]
    assert lines and lines[0].index("drift vs FP32") < lines[0].index("device p50")


def test_a_pid_namespaced_container_falls_back_to_the_device_delta_and_says_so(gm, monkeypatch, tmp_path):
    _fakes(monkeypatch, pid_visible=False)
    report = gm.run(["toy"], ["fp32"], 3, 10, None, 0, out=tmp_path / "r.json")
    mem = report["results"]["toy torch fp32"]["memory"]
    assert mem["method"] == "nvml-device-delta" and "PID-namespaced" in mem["method_note"] and "424242" in mem["method_note"]
    assert mem["context_mb"] == pytest.approx(520.0) and mem["process_peak_mb"] == pytest.approx(1900.0)


def test_the_fit_is_judged_on_the_nvml_peak_not_the_allocator(gm, monkeypatch, tmp_path):
    nvml, cuda = _fakes(monkeypatch)
    cuda.run_mb = 11000.0  # the allocator stays at 700 MB under its cap; the process does not fit
    r = gm.run(["toy"], ["fp32"], 3, 10, None, 0)["results"]["toy torch fp32"]
    assert r["status"] == "ok" and r["memory"]["allocator_peak_mb"] < BUDGET
    assert not r["memory"]["fits_budget"] and r["memory"]["process_peak_mb"] == pytest.approx(11000.0)


def test_fp16_overflow_is_reported_as_nonfinite_and_not_timed(gm, monkeypatch, tmp_path):
    _register(monkeypatch, _overflowing_toy("toyinf"))
    _fakes(monkeypatch)
    report = gm.run(["toyinf"], ["fp32", "fp16", "bf16"], 3, 10, None, 0)
    fp16, bf16 = report["results"]["toyinf torch fp16"], report["results"]["toyinf torch bf16"]
    assert report["results"]["toyinf torch fp32"]["status"] == "ok"
    assert fp16["status"] == "nonfinite" and "NaN/Inf in output" in fp16["reason"] and "device_ms" not in fp16
    assert fp16["drift_gate"]["passed"] is False and not fp16["drift"]["tensor"]["output"]["finite"]
    assert bf16["status"] == "ok" and bf16["drift"]["tensor"]["output"]["finite"]


def test_a_model_that_cannot_run_fully_cast_is_measured_under_autocast(gm, monkeypatch):
    """Like HTDemucs (a float32 positional embedding meets a cast LayerNorm): the full cast is an
    error, recorded; the precision is then measured the way PyTorch users run it, under autocast."""
    toy = ensure_registered()

    def build(checkpoint=None, config=None, seed=0):
        import torch

        built = toy.build(checkpoint, config, seed)

        class Upcast(torch.nn.Module):
            def __init__(self, net):
                super().__init__()
                self.net = net

            def forward(self, x):
                return self.net(x.float())

        return dataclasses.replace(built, module=Upcast(built.module))

    _register(monkeypatch, dataclasses.replace(toy, name="toyupcast", build=build))
    _fakes(monkeypatch)
    r = gm.run(["toyupcast"], ["fp32", "bf16"], 3, 10, None, 0)["results"]["toyupcast torch bf16"]
    assert r["full_cast"]["status"] == "error" and "type" in r["full_cast"]["reason"]
    assert r["status"] == "ok" and r["cast"].startswith("torch.autocast") and r["drift_gate"]["key"] == "mae"


def test_a_failing_model_is_a_result_and_the_rest_still_runs(gm, monkeypatch, tmp_path):
    _register(monkeypatch, _overflowing_toy("toybroken", fail=True))
    _fakes(monkeypatch)
    report = gm.run(["toybroken", "toy"], ["fp32", "bf16"], 3, 10, None, 0, out=tmp_path / "r.json")
    broken = report["results"]["toybroken torch fp32"]
    assert broken["status"] == "error" and "weights could not be made" in broken["reason"]
    assert report["results"]["toybroken torch bf16"]["status"] == "skipped"
    assert report["results"]["toy torch bf16"]["status"] == "ok" and report["complete"]


def test_a_model_whose_packages_are_missing_is_skipped_with_the_reason(gm, monkeypatch):
    _register(monkeypatch, dataclasses.replace(ensure_registered(), name="toypkg", packages=("xopt_no_such_pkg",)))
    _fakes(monkeypatch)
    r = gm.run(["toypkg"], ["fp32"], 3, 10, None, 0)["results"]["toypkg torch fp32"]
    assert r["status"] == "skipped" and "xopt_no_such_pkg" in r["reason"]


def test_arguments_are_checked_before_anything_runs(gm, capsys):
    assert gm.main(["--models", "nosuch"]) == 1 and "unknown model(s) nosuch" in capsys.readouterr().err
    assert gm.main(["--precisions", "fp8"]) == 1
    assert gm.main(["--warmup", "3"]) == 1


def test_the_launcher_runs_each_job_in_a_process_of_its_own(tmp_path):
    """The real launcher on this machine: the child finds no NVML (or no CUDA) and reports it as
    a result through its result file; a child past its timeout is reported, not waited for."""
    gm = _tool()
    job = {"model": "modnet", "precision": "fp32", "profile": "rtx3060-laptop-12gb", "seed": 0, "iters": 3,
           "warmup": 10, "drift_inputs": 1, "cap_mb": BUDGET, "workdir": str(tmp_path),
           "outputs": str(tmp_path / "modnet-fp32.npz")}
    if gpus():
        pytest.skip("a GPU is present: the child would measure")
    r = gm.launch_child(job, 300)
    assert r["status"] == "error" and "NVML" in r["reason"] and r["traceback"], r
    slow = gm.launch_child({**job, "precision": "bf16"}, 0.01)
    assert slow["status"] == "timeout"


@pytest.mark.skipif(bool(gpus()), reason="a GPU is present: the no-GPU answer does not apply")
def test_without_a_gpu_it_says_why_and_writes_nothing(tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, str(TOOL), "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "nothing measured: no NVIDIA GPU" in proc.stderr and "NVML" in proc.stderr
    assert not out.exists()


@pytest.mark.gpu
def test_on_a_gpu_it_measures_modnet_under_the_budget_cap(tmp_path):
    """The GPU window's own check: MODNet at FP32 and BF16 (about a minute on an H100)."""
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, str(TOOL), "--models", "modnet", "--precisions", "fp32,bf16",
                           "--iters", "10", "--out", str(out)], capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["complete"] and report["memory_cap"]["cap_mb"] == pytest.approx(BUDGET) and report["machine"]["gpus"]
    fp32, bf16 = report["results"]["modnet torch fp32"], report["results"]["modnet torch bf16"]
    assert fp32["status"] == "ok", fp32
    assert fp32["device_ms"]["p50"] > 0 and fp32["memory"]["process_peak_mb"] > fp32["memory"]["context_mb"] > 0
    assert fp32["memory"]["method"] in ("nvml-process", "nvml-device-delta")
    assert bf16["status"] in ("ok", "nonfinite") and "drift_gate" in bf16
    assert np.isfinite(fp32["memory"]["allocator_peak_mb"])
