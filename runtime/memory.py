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

    def __init__(self, gpu_index: int | None = None, interval: float = 0.005, torch_cuda: bool = False,
                 timeline: bool = False):
        from xopt.machine import gpus

        self.gpu_index = gpu_index if gpu_index is not None else (0 if gpus() else None)
        self.interval = interval
        self.torch_cuda = torch_cuda
        self.timeline = _Timeline() if timeline else None  # memory over time, with phase marks
        self.result: dict = {}

    def mark(self, label: str) -> None:
        """A phase boundary ("timed frames", ...) on the timeline."""
        if self.timeline is not None:
            self.timeline.mark(label)

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
        if self.timeline is not None:
            self.timeline.start(self._sampler)
        return self

    def __exit__(self, *exc):
        timeline = self.timeline.finish() if self.timeline is not None else None
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
        if timeline is not None:
            self.result["timeline"] = timeline
        return False


class _Timeline(threading.Thread):
    """Host RSS (and the GPU sampler's process VRAM) every 20 ms, kept to at most MAX_POINTS by
    taking the larger of neighbours, so a short peak survives the thinning."""

    MAX_POINTS = 400

    def __init__(self, interval: float = 0.02):
        super().__init__(daemon=True)
        self.interval, self.points, self.marks = interval, [], []
        self.stop_event = threading.Event()
        self.gpu = None

    def start(self, gpu_sampler=None):  # noqa: D102 - threading.Thread.start with the GPU sampler
        self.gpu, self.t0 = gpu_sampler, time.perf_counter()
        super().start()

    def mark(self, label: str) -> None:
        self.marks.append([round(time.perf_counter() - self.t0, 4), label])

    def run(self):
        while not self.stop_event.is_set():
            mb = self.gpu._process_used() if self.gpu is not None else host_rss_mb()
            self.points.append((time.perf_counter() - self.t0, mb))
            if len(self.points) >= 2 * self.MAX_POINTS:
                self.points = [max(a, b, key=lambda p: p[1]) for a, b in zip(self.points[::2], self.points[1::2])]
            time.sleep(self.interval)

    def finish(self) -> dict:
        self.stop_event.set()
        self.join(timeout=1.0)
        return {"kind": "vram-nvml" if self.gpu is not None else "host-rss",
                "t_s": [round(t, 4) for t, _ in self.points], "mb": [round(m, 1) for _, m in self.points],
                "marks": self.marks}
