"""runtime/memory.py: the memory basis follows the backend, and the result names its method.
NVML is the fake in tests/fake_gpu.py (this machine has no driver); the monitor is the real one."""
from __future__ import annotations

import pytest

import fake_gpu
from xopt.runtime.memory import MemoryMonitor, measures_vram


def test_the_basis_follows_the_backend():
    assert not measures_vram("ort-cpu") and not measures_vram(None)
    assert measures_vram("ort-cuda") and measures_vram("ort-trt") and measures_vram("trt")
    assert not measures_vram("torch") and measures_vram("torch", {"device": "cuda"})


def test_a_cpu_backend_on_a_gpu_machine_reports_host_rss(monkeypatch):
    nvml = fake_gpu.fake_nvml(process_mb=0.0)
    fake_gpu.install(monkeypatch, nvml)
    with MemoryMonitor(backend="ort-cpu") as mon:
        blob = bytearray(64 << 20)
    assert mon.result["kind"] == "host-rss" and mon.result["method"] == "host-rss"
    assert mon.result["peak_mb"] >= 64 and len(blob) and nvml.init_calls == 0  # NVML never asked


def test_a_gpu_backend_reports_the_nvml_process_figure(monkeypatch):
    nvml = fake_gpu.fake_nvml()
    fake_gpu.install(monkeypatch, nvml)
    with MemoryMonitor(backend="ort-cuda", timeline=True) as mon:
        nvml.process_mb = 750.0
        assert mon.gpu_now()["process_mb"] == pytest.approx(750.0)
    r = mon.result
    assert r["kind"] == "vram-nvml" and r["method"] == "nvml-process" and r["peak_mb"] == pytest.approx(750.0)
    assert r["process_peak_mb"] == pytest.approx(750.0) and r["device_delta_mb"] == pytest.approx(750.0)
    assert r["timeline"]["kind"] == "vram-nvml"


def test_without_its_pid_in_nvml_the_device_delta_is_used_and_named(monkeypatch):
    nvml = fake_gpu.fake_nvml(pid_visible=False, others_mb=3000.0)
    fake_gpu.install(monkeypatch, nvml)
    with MemoryMonitor(backend="trt") as mon:
        nvml.process_mb = 1200.0
        mon.gpu_now()
    r = mon.result
    assert r["method"] == "nvml-device-delta" and r["process_peak_mb"] is None
    assert r["peak_mb"] == pytest.approx(1200.0) and r["device_start_mb"] == pytest.approx(3000.0)
    assert "PID-namespaced container" in r["method_note"] and "424242" in r["method_note"]


def test_a_gpu_backend_without_a_gpu_falls_back_to_host_rss():
    from xopt.machine import gpus

    if gpus():
        pytest.skip("a GPU is present")
    with MemoryMonitor(backend="ort-cuda") as mon:
        pass
    assert mon.result["method"] == "host-rss"
