"""Peak memory of a phase: VRAM through NVML (process and device, sampled in a thread) and
the torch allocator when a GPU is present; host peak RSS otherwise.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

_STATUS = Path("/proc/self/status")


def _status_kb(field: str) -> float | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        return None
    return None


def reset_host_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux clear_refs 5); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def host_rss_mb() -> float:
    kb = _status_kb("VmRSS")
    if kb is not None:
        return kb / 1024
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def host_peak_mb() -> float:
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_OOM_TEXT = ("out of memory", "failed to allocate", "bad_alloc", "cannot allocate memory", "std::bad_alloc",
             "cudaerrormemoryallocation", "cuda_error_out_of_memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for allocation failures from Python, torch (CPU/CUDA), ONNX Runtime or TensorRT."""
    from xopt.errors import BudgetError

    if isinstance(exc, (MemoryError, BudgetError)) or type(exc).__name__ == "OutOfMemoryError":
        return True
    from_runtime = isinstance(exc, (RuntimeError, OSError)) or type(exc).__module__.startswith("onnxruntime")
    text = str(exc).lower()
    return from_runtime and any(t in text for t in _OOM_TEXT)


class _NvmlSampler(threading.Thread):
    def __init__(self, index: int, interval: float):
        super().__init__(daemon=True)
        import pynvml

        self.nvml = pynvml
        pynvml.nvmlInit()
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self.interval = interval
        self.stop_event = threading.Event()
        self.device_peak = self.process_peak = 0.0
        self.device_start = self._device_used()

    def _device_used(self) -> float:
        return self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used / 2**20

    def _process_used(self) -> float:
        pid = os.getpid()
        try:
            procs = self.nvml.nvmlDeviceGetComputeRunningProcesses(self.handle)
        except self.nvml.NVMLError:
            return 0.0
        return sum((p.usedGpuMemory or 0) for p in procs if p.pid == pid) / 2**20

    def run(self):
        while not self.stop_event.is_set():
            self.sample()
            time.sleep(self.interval)

    def sample(self):
        self.device_peak = max(self.device_peak, self._device_used())
        self.process_peak = max(self.process_peak, self._process_used())

    def finish(self) -> dict:
        self.stop_event.set()
        self.join(timeout=1.0)
        self.sample()
        self.nvml.nvmlShutdown()
        return {"device_peak_mb": self.device_peak, "device_start_mb": self.device_start,
                "process_peak_mb": self.process_peak}


class MemoryMonitor:
    """`with MemoryMonitor() as m: ...` then `m.result`."""

    def __init__(self, gpu_index: int | None = None, interval: float = 0.005, torch_cuda: bool = False):
        from xopt.machine import gpus

        self.gpu_index = gpu_index if gpu_index is not None else (0 if gpus() else None)
        self.interval = interval
        self.torch_cuda = torch_cuda
        self.result: dict = {}

    def __enter__(self):
        self._sampler = None
        if self.gpu_index is not None:
            self._sampler = _NvmlSampler(self.gpu_index, self.interval)
            self._sampler.start()
            if self.torch_cuda:
                import torch

                torch.cuda.reset_peak_memory_stats()
        self._reset_ok = reset_host_peak()
        self._host_start = host_rss_mb()
        return self

    def __exit__(self, *exc):
        host_peak = host_peak_mb()
        host = {"host_peak_mb": host_peak, "host_start_mb": self._host_start,
                "host_delta_mb": max(0.0, host_peak - self._host_start), "host_peak_reset": self._reset_ok}
        if self._sampler is not None:
            gpu = self._sampler.finish()
            self.result = {"kind": "vram-nvml", "peak_mb": gpu["process_peak_mb"] or
                           gpu["device_peak_mb"] - gpu["device_start_mb"], **gpu, **host}
            if self.torch_cuda:
                import torch

                self.result["allocator_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        else:
            self.result = {"kind": "host-rss", "peak_mb": host_peak, **host}
        return False
