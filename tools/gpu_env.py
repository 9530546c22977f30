#!/usr/bin/env python
"""The GPU window's environment record, as JSON: what a reader needs to trust (or discount) the
numbers measured beside it. Driver and CUDA versions (NVML's and torch's), cuDNN, the GPU (name,
UUID, memory, compute capability), clocks (current, application and maximum, SM and memory),
power limit, MIG and ECC mode, persistence and compute mode, torch's TF32 and cuDNN flags, the
package versions, and whether xopt's own requirements are met. A field NVML or torch cannot
give reads {"unavailable": why} instead of stopping the record.

    python tools/gpu_env.py --out env.json [--force]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _str(v):
    return v.decode() if isinstance(v, bytes) else v


def _read(fn, *args):
    try:
        return _str(fn(*args))
    except Exception as exc:  # noqa: BLE001 - NVMLError_NotSupported and the like are answers here
        return {"unavailable": f"{type(exc).__name__}: {str(exc)[:120]}"}


def nvml_record(index: int = 0) -> dict:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001
        return {"unavailable": f"NVML: {type(exc).__name__}: {exc}"}
    try:
        h = pynvml.nvmlDeviceGetHandleByIndex(index)
        clock = {name: getattr(pynvml, f"NVML_CLOCK_{name.upper()}") for name in ("sm", "mem", "graphics")}
        mem = _read(pynvml.nvmlDeviceGetMemoryInfo, h)
        cc = _read(pynvml.nvmlDeviceGetCudaComputeCapability, h)
        cuda = _read(pynvml.nvmlSystemGetCudaDriverVersion)
        return {
            "driver": _read(pynvml.nvmlSystemGetDriverVersion),
            "cuda_driver": f"{cuda // 1000}.{cuda % 1000 // 10}" if isinstance(cuda, int) else cuda,
            "gpu_count": _read(pynvml.nvmlDeviceGetCount),
            "name": _read(pynvml.nvmlDeviceGetName, h),
            "uuid": _read(pynvml.nvmlDeviceGetUUID, h),
            "memory_total_mb": mem.total / 2**20 if hasattr(mem, "total") else mem,
            "memory_used_mb": mem.used / 2**20 if hasattr(mem, "used") else mem,
            "compute_capability": f"{cc[0]}.{cc[1]}" if isinstance(cc, tuple) else cc,
            "clocks_mhz": {k: _read(pynvml.nvmlDeviceGetClockInfo, h, v) for k, v in clock.items()},
            "application_clocks_mhz": {k: _read(pynvml.nvmlDeviceGetApplicationsClock, h, v) for k, v in clock.items()},
            "max_clocks_mhz": {k: _read(pynvml.nvmlDeviceGetMaxClockInfo, h, v) for k, v in clock.items()},
            "power_limit_w": _watts(_read(pynvml.nvmlDeviceGetPowerManagementLimit, h)),
            "mig_mode": _pair(_read(pynvml.nvmlDeviceGetMigMode, h)),
            "ecc_mode": _pair(_read(pynvml.nvmlDeviceGetEccMode, h)),
            "persistence_mode": _read(pynvml.nvmlDeviceGetPersistenceMode, h),
            "compute_mode": _read(pynvml.nvmlDeviceGetComputeMode, h),
            "processes": len(_read(pynvml.nvmlDeviceGetComputeRunningProcesses, h) or []),
        }
    finally:
        pynvml.nvmlShutdown()


def _watts(mw):
    return mw / 1000 if isinstance(mw, (int, float)) else mw


def _pair(v):
    """NVML's (current, pending) mode pairs."""
    return {"current": v[0], "pending": v[1]} if isinstance(v, (tuple, list)) and len(v) == 2 else v


def torch_record() -> dict:
    try:
        import torch
    except ImportError as exc:
        return {"unavailable": str(exc)}
    out = {"version": torch.__version__, "cuda_runtime": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
           "cudnn_benchmark": torch.backends.cudnn.benchmark, "cudnn_deterministic": torch.backends.cudnn.deterministic,
           "float32_matmul_precision": torch.get_float32_matmul_precision()}
    mm, conv = torch.backends.cuda.matmul, getattr(torch.backends.cudnn, "conv", None)
    if hasattr(mm, "fp32_precision") and conv is not None:  # read the API the measurements set, never both
        out["tf32_default"] = {"api": "fp32_precision", "matmul": mm.fp32_precision, "cudnn_conv": conv.fp32_precision}
    else:
        out["tf32_default"] = {"api": "allow_tf32", "matmul": mm.allow_tf32, "cudnn_conv": torch.backends.cudnn.allow_tf32}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        out["device"] = {"name": p.name, "total_memory_mb": p.total_memory / 2**20,
                         "multiprocessors": p.multi_processor_count, "capability": f"{p.major}.{p.minor}"}
    return out


def requirements_record() -> dict:
    """xopt's base requirements against what is installed here: a window without a wheel it
    needs says so in the record instead of failing later inside a measurement."""
    from importlib.metadata import PackageNotFoundError, requires, version

    from packaging.requirements import Requirement

    missing, unmet, met = [], [], {}
    for text in requires("xopt") or []:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            have = version(req.name)
        except PackageNotFoundError:
            missing.append(str(req))
            continue
        (met.__setitem__(req.name, have) if req.specifier.contains(have, prereleases=True)
         else unmet.append(f"{req} (installed {have})"))
    return {"satisfied": not missing and not unmet, "missing": missing, "unmet": unmet, "installed": met}


def record() -> dict:
    import platform
    import time

    from xopt.machine import versions

    return {"kind": "gpu-window-environment", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "python": sys.version.split()[0], "platform": platform.platform(), "nvml": nvml_record(),
            "torch": torch_record(), "requirements": requirements_record(), "versions": versions()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    ap.add_argument("--out", required=True)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    from xopt.atomic import write_json

    rec = record()
    write_json(Path(args.out), rec, force=args.force)
    nv, tr, req = rec["nvml"], rec["torch"], rec["requirements"]
    print(f"gpu_env: {nv.get('name', nv.get('unavailable'))}, driver {nv.get('driver')}, CUDA {nv.get('cuda_driver')} "
          f"(torch {tr.get('version')} CUDA {tr.get('cuda_runtime')}, cuDNN {tr.get('cudnn')}), MIG {nv.get('mig_mode')}, "
          f"ECC {nv.get('ecc_mode')}; xopt requirements {'met' if req['satisfied'] else req['missing'] + req['unmet']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
