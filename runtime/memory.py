"""Peak memory of a phase: VRAM through NVML (process and device, sampled in a thread, and the
torch allocator when asked) for a GPU backend; host peak RSS for a CPU one. The result names the
method that gave `peak_mb`.
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


PROCESS = "nvml-process"
DEVICE_DELTA = "nvml-device-delta"
HOST = "host-rss"


def measures_vram(backend: str | None, options: dict | None = None) -> bool:
    """Whether a session of `backend` keeps its tensors on the GPU, so that VRAM is its memory.
    A CPU backend on a GPU machine is measured by host RSS: NVML would read ~0 for it."""
    if not backend:
        return False
    from xopt.runtime.backends.base import get_backend

    device = get_backend(backend).device
    if device == "cpu" and options:  # the torch backend runs where its `device` option says
        device = str(options.get("device") or "cpu")
    return device.startswith("cuda")


class _NvmlSampler(threading.Thread):
    """Samples NVML every `interval` s: this process's VRAM (nvmlDeviceGetComputeRunningProcesses)
    and the device's used memory. Where NVML never lists this process with a figure (a
    PID-namespaced container: the driver reports host PIDs; some drivers report 0 or "not
    available"), the peak is the device-wide increase since the sampler started, and says so."""

    def __init__(self, index: int, interval: float):
        super().__init__(daemon=True)
        import pynvml

        self.nvml = pynvml
        pynvml.nvmlInit()
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self.interval = interval
        self.pid = os.getpid()
        self.stop_event = threading.Event()
        self.device_peak = self.process_peak = 0.0
        self.own_seen = False  # NVML listed this PID with a figure at least once
        self.pids_seen: set[int] = set()
        self.device_start = self._device_used()

    def _device_used(self) -> float:
        return self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used / 2**20

    def _process_used(self) -> float:
        try:
            procs = self.nvml.nvmlDeviceGetComputeRunningProcesses(self.handle)
        except self.nvml.NVMLError:
            return 0.0
        mine = 0.0
        for p in procs:
            self.pids_seen.add(int(p.pid))
            if p.pid == self.pid and p.usedGpuMemory:  # None: NVML_VALUE_NOT_AVAILABLE
                mine += p.usedGpuMemory
        if mine > 0:
            self.own_seen = True
        return mine / 2**20

    def run(self):
        while not self.stop_event.is_set():
            self.sample()
            time.sleep(self.interval)

    def sample(self) -> dict:
        device, process = self._device_used(), self._process_used()
        self.device_peak = max(self.device_peak, device)
        self.process_peak = max(self.process_peak, process)
        return {"process_mb": process, "device_mb": device, "device_delta_mb": max(0.0, device - self.device_start)}

    def current_mb(self) -> float:
        """This process's VRAM by the method the result will use."""
        now = self.sample()
        return now["process_mb"] if self.own_seen else now["device_delta_mb"]

    def finish(self) -> dict:
        self.stop_event.set()
        self.join(timeout=1.0)
        self.sample()
        self.nvml.nvmlShutdown()
        delta = max(0.0, self.device_peak - self.device_start)
        if self.own_seen:
            method, note = PROCESS, "NVML per-process figure for this PID"
        else:
            others = sorted(self.pids_seen - {self.pid})
            method = DEVICE_DELTA
            note = (f"NVML listed no memory for this process (PID {self.pid}; it listed "
                    f"{', '.join(map(str, others[:8])) or 'no process'}: a PID-namespaced container reports host "
                    "PIDs), so this is the device-wide increase since the monitor started, other processes included")
        return {"method": method, "method_note": note, "peak_mb": self.process_peak if self.own_seen else delta,
                "device_peak_mb": self.device_peak, "device_start_mb": self.device_start, "device_delta_mb": delta,
                "process_peak_mb": self.process_peak if self.own_seen else None}


class MemoryMonitor:
    """`with MemoryMonitor(backend=...) as m: ...` then `m.result`.

    The basis follows the backend: VRAM through NVML for a GPU backend (when NVML sees a GPU),
    host peak RSS otherwise. `gpu_index` asks for NVML explicitly (tools/gpu_measure.py);
    `result["method"]` says which figure `peak_mb` is: "nvml-process", "nvml-device-delta" or
    "host-rss"."""

    def __init__(self, gpu_index: int | None = None, interval: float = 0.005, torch_cuda: bool = False,
                 timeline: bool = False, backend: str | None = None, backend_options: dict | None = None):
        if gpu_index is None and measures_vram(backend, backend_options):
            from xopt.machine import gpus

            gpu_index = 0 if gpus() else None
        self.gpu_index = gpu_index
        self.interval = interval
        self.torch_cuda = torch_cuda
        self.timeline = _Timeline() if timeline else None  # memory over time, with phase marks
        self.result: dict = {}

    def mark(self, label: str) -> None:
        """A phase boundary ("timed frames", ...) on the timeline."""
        if self.timeline is not None:
            self.timeline.mark(label)

    def gpu_now(self) -> dict | None:
        """This moment's VRAM (process, device, device increase since the start); None without NVML."""
        return self._sampler.sample() if self._sampler is not None else None

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
            self.result = {"kind": "vram-nvml", **self._sampler.finish(), **host}
            if self.torch_cuda:
                import torch

                self.result["allocator_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
                self.result["allocator_reserved_peak_mb"] = torch.cuda.max_memory_reserved() / 2**20
        else:
            self.result = {"kind": "host-rss", "method": HOST, "peak_mb": host_peak, **host}
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
            mb = self.gpu.current_mb() if self.gpu is not None else host_rss_mb()
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
