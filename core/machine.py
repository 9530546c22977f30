"""What a report must record about where it ran: CPU, GPU, driver and package versions."""
from __future__ import annotations

import os
import platform
import sys
from functools import lru_cache

from xopt.extras import dist_version

VERSIONED = ("xopt", "torch", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxscript",
             "onnxconverter-common", "onnxslim", "tensorrt", "tensorrt-rtx", "tensorflow-cpu", "tf2onnx",
             "polygraphy")


def versions() -> dict[str, str]:
    """Versions of the generic stack and of every registered model's own packages."""
    from xopt.registry import list_models

    names = list(VERSIONED) + [p for spec in list_models() for p in spec.packages if p not in VERSIONED]
    found = {name: dist_version(name) for name in names}
    return {k: v for k, v in found.items() if v}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpus() -> list[dict]:
    """GPUs NVML can see; empty without a driver (NVML raises, which is the normal CPU case)."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return []
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(h)
            out.append({
                "index": i,
                "name": _str(pynvml.nvmlDeviceGetName(h)),
                "memory_mb": pynvml.nvmlDeviceGetMemoryInfo(h).total / 2**20,
                "compute_capability": f"{major}.{minor}",
                "driver": _str(driver),
            })
        return out
    finally:
        pynvml.nvmlShutdown()


def _str(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


@lru_cache(maxsize=1)
def describe() -> dict:
    import psutil

    return {
        "hostname": platform.node(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "ram_mb": round(psutil.virtual_memory().total / 2**20),
        "gpus": gpus(),
        "versions": versions(),
    }
