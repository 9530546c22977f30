#!/usr/bin/env python
"""Torch CUDA baselines for every registered model: FP32 / FP16 / BF16 latency (CUDA events
beside host wall time) and VRAM (NVML process and device peak, sampled in a thread, plus
the torch allocator peak), under a memory cap that stands in for a 12 GB RTX 3060 on a
larger GPU. Writes benchmarks/results/gpu-torch-<gpu>-<date>.json with device, driver and
versions.

The cap is torch's per-process allocator fraction: it bounds what torch may allocate,
not the CUDA context or other processes, and it is reported as a cap, never as a
measurement of a 3060.

On a machine without an NVIDIA GPU (or with a CPU-only torch) it measures nothing and
says why (exit status 2).

    python tools/gpu_measure.py [--models modnet,demucs] [--iters 20] [--cap-mb 12288]
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

NO_GPU_EXIT = 2
DTYPES = ("fp32", "fp16", "bf16")
CAP_NOTE = ("per-process torch allocator cap standing in for the RTX 3060 Laptop's 12 GB; "
            "the measuring GPU is larger, so this is a cap, not a 3060 measurement")


def why_not_here() -> str | None:
    """None when a CUDA GPU is usable by torch here; otherwise the reason, in one line."""
    from xopt.machine import gpus

    if not gpus():
        return "no NVIDIA GPU: NVML found no driver/device on this machine"
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed"
    import torch

    if not torch.cuda.is_available():
        return f"torch {torch.__version__} cannot use CUDA here (CPU-only build or driver mismatch)"
    return None


def _cast(feed: dict, dtype, device):
    import numpy as np
    import torch

    out = []
    for arr in feed.values():
        t = torch.from_numpy(np.ascontiguousarray(arr)).to(device)
        out.append(t.to(dtype) if t.is_floating_point() else t)
    return out


def measure(spec, profile, dtype_name: str, iters: int, warmup: int, seed: int) -> dict:
    """One model at one precision: build, move to the GPU, warm up, time, sample memory."""
    import torch

    from xopt.runtime.memory import MemoryMonitor

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype_name]
    built = spec.build(checkpoint=None, config=None, seed=seed)
    feeds = spec.profile_inputs(profile.model_targets(spec.name), 2, seed)
    module = built.module.to("cuda", dtype).eval()
    args = [_cast({n: f[n] for n in spec.input_names}, dtype, "cuda") for f in feeds]
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    with MemoryMonitor(gpu_index=0, torch_cuda=True) as mem, torch.inference_mode():
        t0 = time.perf_counter()
        module(*args[0])
        torch.cuda.synchronize()
        first_ms = (time.perf_counter() - t0) * 1e3
        for i in range(warmup):
            module(*args[i % len(args)])
        host, device = [], []
        for i in range(iters):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t0 = time.perf_counter()
            start.record()
            module(*args[i % len(args)])
            end.record()
            end.synchronize()
            host.append((time.perf_counter() - t0) * 1e3)
            device.append(start.elapsed_time(end))
    del module, args
    torch.cuda.empty_cache()
    return {"status": "ok", "inputs": {n: list(feeds[0][n].shape) for n in spec.input_names},
            "weights": built.weights.to_json(), "first_run_ms": first_ms, "host_ms": _summary(host),
            "device_ms": _summary(device), "memory": mem.result}


def _summary(values: list[float]) -> dict:
    import numpy as np

    a = np.asarray(values)
    return {"n": len(values), "p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "mean": float(a.mean()), "min": float(a.min())}


def run(models: list[str] | None, iters: int, warmup: int, cap_mb: float, profile_name: str | None, seed: int) -> dict:
    import torch

    from xopt.machine import describe
    from xopt.profiles import get_profile
    from xopt.registry import list_models

    profile = get_profile(profile_name)
    total_mb = torch.cuda.get_device_properties(0).total_memory / 2**20
    fraction = min(1.0, cap_mb / total_mb)
    torch.cuda.set_per_process_memory_fraction(fraction)
    specs = [s for s in list_models() if not models or s.name in models]
    results: dict = {}
    for spec in specs:
        missing = [e for e in spec.extras_needed if importlib.util.find_spec(e) is None]
        for dt in DTYPES:
            key = f"{spec.name} torch {dt}"
            if missing:
                results[key] = {"status": "skipped", "reason": f"extras missing: {', '.join(missing)}"}
                continue
            try:
                results[key] = measure(spec, profile, dt, iters, warmup, seed)
            except torch.cuda.OutOfMemoryError as exc:
                results[key] = {"status": "oom", "reason": f"over the {cap_mb:.0f} MiB cap: {str(exc)[:300]}"}
            except Exception as exc:  # noqa: BLE001 - a failing model/precision is a result, not a stop
                results[key] = {"status": "error", "reason": f"{type(exc).__name__}: {str(exc)[:300]}"}
            torch.cuda.empty_cache()
            print(f"{key}: {_line(results[key])}", flush=True)
    return {
        "schema_version": 1, "kind": "gpu-torch-baselines", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": describe(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(), "device": torch.cuda.get_device_name(0),
        "memory_cap": {"cap_mb": cap_mb, "device_total_mb": total_mb, "fraction": fraction, "note": CAP_NOTE},
        "profile": profile.name, "iters": iters, "warmup": warmup, "results": results,
    }


def _line(r: dict) -> str:
    if r["status"] != "ok":
        return f"{r['status']} ({r['reason']})"
    mem = r["memory"]
    return (f"device p50 {r['device_ms']['p50']:.2f} ms, host p50 {r['host_ms']['p50']:.2f} ms, "
            f"VRAM process peak {mem.get('process_peak_mb', 0):.0f} MiB, allocator peak "
            f"{mem.get('allocator_peak_mb', 0):.0f} MiB")


def default_out(report: dict) -> Path:
    slug = "".join(ch if ch.isalnum() else "-" for ch in report["device"].lower()).strip("-")
    return Path(__file__).resolve().parents[1] / "benchmarks" / "results" / f"gpu-torch-{slug}-{time.strftime('%Y%m%d')}.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    ap.add_argument("--models", default="", help="comma-separated model names (default: every registered model)")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--cap-mb", type=float, default=12288.0, help="torch allocator cap in MiB (default: 12 GB)")
    ap.add_argument("--profile", default=None, help="device profile for the input sizes (default: rtx3060-laptop-12gb)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="output JSON (default: benchmarks/results/gpu-torch-<gpu>-<date>.json)")
    ap.add_argument("--force", action="store_true", help="overwrite --out")
    args = ap.parse_args(argv)
    why = why_not_here()
    if why:
        print(f"gpu_measure: nothing measured: {why}. Run it on a machine with an NVIDIA GPU, its driver and a "
              "CUDA build of torch.", file=sys.stderr)
        return NO_GPU_EXIT
    report = run([m for m in args.models.split(",") if m] or None, args.iters, args.warmup, args.cap_mb,
                 args.profile, args.seed)
    from xopt.atomic import write_json

    out = write_json(Path(args.out) if args.out else default_out(report), report, force=args.force)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
