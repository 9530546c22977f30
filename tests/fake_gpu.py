"""Small stand-ins for the hardware CI lacks: an NVML module (`pynvml`) and torch.cuda.

They model the facts xopt reads, not a GPU: NVML's device list, its memory counters and its
per-process list (with the PID it reports: ours, or a host PID as in a PID-namespaced
container), and torch.cuda's device properties, allocator counters and events. The code under
test (memory monitor, profile matching, gpu_measure, the environment record) is the real one.
"""
from __future__ import annotations

import os
import time
import types

H100 = {"name": "NVIDIA H100 80GB HBM3", "memory_mb": 81559.0, "cc": (9, 0)}
RTX3060_LAPTOP = {"name": "NVIDIA GeForce RTX 3060 Laptop GPU", "memory_mb": 12288.0, "cc": (8, 6)}


class NVMLError(Exception):
    pass


class NVMLError_NotSupported(NVMLError):  # noqa: N801 - pynvml's own name
    pass


def fake_nvml(gpu: dict = H100, *, pid_visible: bool = True, others_mb: float = 1000.0,
              process_mb: float = 0.0) -> types.ModuleType:
    """A `pynvml` module for one GPU. `m.process_mb` is this process's VRAM (tests and the fake
    torch.cuda move it); `pid_visible=False` lists it under a host PID (a container's view)."""
    m = types.ModuleType("pynvml")
    m.NVMLError, m.NVMLError_NotSupported = NVMLError, NVMLError_NotSupported
    m.NVML_CLOCK_GRAPHICS, m.NVML_CLOCK_SM, m.NVML_CLOCK_MEM = 0, 1, 2
    m.process_mb, m.others_mb, m.pid_visible, m.gpu = process_mb, others_mb, pid_visible, gpu
    m.init_calls = 0
    mib = 2**20

    def init():
        m.init_calls += 1

    m.nvmlInit, m.nvmlShutdown = init, lambda: None
    m.nvmlSystemGetDriverVersion = lambda: "580.159.04"
    m.nvmlSystemGetCudaDriverVersion = lambda: 13000
    m.nvmlDeviceGetCount = lambda: 1
    m.nvmlDeviceGetHandleByIndex = lambda i: ("handle", i)
    m.nvmlDeviceGetName = lambda h: gpu["name"].encode()  # older pynvml returns bytes
    m.nvmlDeviceGetUUID = lambda h: "GPU-00000000-fake"
    m.nvmlDeviceGetCudaComputeCapability = lambda h: gpu["cc"]
    m.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(
        total=int(gpu["memory_mb"] * mib), used=int((m.others_mb + m.process_mb) * mib),
        free=int((gpu["memory_mb"] - m.others_mb - m.process_mb) * mib))

    def processes(h):
        own = types.SimpleNamespace(pid=os.getpid() if m.pid_visible else 424242, usedGpuMemory=int(m.process_mb * mib))
        other = types.SimpleNamespace(pid=777, usedGpuMemory=int(m.others_mb * mib))
        return [other] + ([own] if m.process_mb else [])

    m.nvmlDeviceGetComputeRunningProcesses = processes
    m.nvmlDeviceGetClockInfo = lambda h, c: {0: 1980, 1: 1980, 2: 2619}[c]
    m.nvmlDeviceGetMaxClockInfo = lambda h, c: {0: 1980, 1: 1980, 2: 2619}[c]

    def not_supported(*a):
        raise NVMLError_NotSupported("Not Supported")

    m.nvmlDeviceGetApplicationsClock = not_supported
    m.nvmlDeviceGetPowerManagementLimit = lambda h: 700000
    m.nvmlDeviceGetMigMode = lambda h: (0, 0)
    m.nvmlDeviceGetEccMode = lambda h: (1, 1)
    m.nvmlDeviceGetPersistenceMode = lambda h: 1
    m.nvmlDeviceGetComputeMode = lambda h: 0
    return m


class FakeCuda:
    """The torch.cuda calls xopt's GPU measurements make. Creating the context (the first call
    that needs one) puts `context_mb` on the fake NVML's process figure; the first timed run
    (an event recorded) raises it to `run_mb`."""

    def __init__(self, nvml, context_mb: float = 520.0, run_mb: float = 1900.0, allocator_peak_mb: float = 700.0):
        self.nvml, self.context_mb, self.run_mb = nvml, context_mb, run_mb
        self.allocator_peak_mb = allocator_peak_mb
        self.fraction = None
        fake = self

        class Event:
            def __init__(self, enable_timing=False):
                self.t = None

            def record(self, stream=None):
                fake.nvml.process_mb = max(fake.nvml.process_mb, fake.run_mb)
                self.t = time.perf_counter()

            def synchronize(self):
                pass

            def elapsed_time(self, end):
                return (end.t - self.t) * 1e3

        self.Event = Event

    def _context(self):
        self.nvml.process_mb = max(self.nvml.process_mb, self.context_mb)

    def is_available(self):
        return True

    def get_device_properties(self, i=0):
        self._context()
        g = self.nvml.gpu
        return types.SimpleNamespace(name=g["name"], total_memory=int(g["memory_mb"] * 2**20), major=g["cc"][0],
                                     minor=g["cc"][1], multi_processor_count=132)

    def get_device_name(self, i=0):
        return self.nvml.gpu["name"]

    def set_per_process_memory_fraction(self, fraction, device=None):
        self._context()
        self.fraction = fraction

    def reset_peak_memory_stats(self, device=None):
        self._context()

    def max_memory_allocated(self, device=None):
        return int(self.allocator_peak_mb * 2**20)

    def max_memory_reserved(self, device=None):
        return int(self.allocator_peak_mb * 1.25 * 2**20)

    def synchronize(self, device=None):
        pass

    def empty_cache(self):
        pass


def install(monkeypatch, nvml, cuda: FakeCuda | None = None) -> None:
    """Put the fakes in place for the test (NVML as `pynvml`; torch.cuda's calls, torch's CUDA
    and cuDNN versions); monkeypatch restores everything afterwards."""
    import sys
    from functools import lru_cache

    from xopt import machine

    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    # a describe() of its own for the test: the real one's cache never holds the fake GPU
    monkeypatch.setattr(machine, "describe", lru_cache(maxsize=1)(machine.describe.__wrapped__))
    if cuda is None:
        return
    import torch


    for name in ("is_available", "get_device_properties", "get_device_name", "set_per_process_memory_fraction",
                 "reset_peak_memory_stats", "max_memory_allocated", "max_memory_reserved", "synchronize",
                 "empty_cache", "Event"):
        monkeypatch.setattr(torch.cuda, name, getattr(cuda, name))
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 91300)
