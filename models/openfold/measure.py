"""One memory/time measurement of the Evoformer trunk, meant to run in its own process.

    python -m xopt.models.openfold.measure '{"config": {...}, "settings": {...},
                                                     "s": 512, "n": 64, "blocks": 1}'

prints one JSON line. A fresh process per point keeps peaks from one point out of the next
(allocator caches, oneDNN scratch). The trunk is built with `blocks` Evoformer blocks at the
config's real widths and runs as OpenFold runs inference (no grad, in-place updates).
Blocks run one after another, so activation peaks do not grow with the block count: the
caller adds the weights of the full model analytically.

CPU: host peak = VmHWM after a `clear_refs` reset, minus the RSS before the inputs existed.
GPU (code path for machines with CUDA; not exercised on the CPU-only CI): the allocator's
`max_memory_allocated` under `set_per_process_memory_fraction(cap)`, plus NVML's process
view; an out-of-memory error is reported as {"oom": true}.
"""
from __future__ import annotations

import contextlib
import time


@contextlib.contextmanager
def fast_init():
    """OpenFold draws its initial weights with scipy's truncnorm (~30 s for the full model);
    measurements only need finite, non-zero weights of the right shapes."""
    from openfold.model import primitives

    def normal(weights, scale=1.0, fan="fan_in"):
        import torch

        with torch.no_grad():
            fan_in = weights.shape[-1] if weights.dim() > 1 else 1
            weights.normal_(0.0, (scale / max(1, fan_in)) ** 0.5)

    orig = primitives.trunc_normal_init_
    primitives.trunc_normal_init_ = normal
    try:
        yield
    finally:
        primitives.trunc_normal_init_ = orig


def build_stack(config: dict, blocks: int):
    """An EvoformerStack of `blocks` blocks at the config's widths (fast random init)."""
    from xopt.models.openfold.network import openfold_config, representative_init_

    of_cfg = openfold_config({**config, "evoformer_blocks": blocks})
    from openfold.model.evoformer import EvoformerStack

    with fast_init():
        stack = EvoformerStack(**of_cfg.model.evoformer_stack)
    representative_init_(stack, 0)
    return stack.eval().requires_grad_(False), of_cfg


def model_parameters(config: dict) -> dict:
    """Parameter counts of the full AlphaFold model and of its Evoformer stack (fast init)."""
    from xopt.models.openfold.network import openfold_config

    of_cfg = openfold_config(config)
    from openfold.model.model import AlphaFold

    with fast_init():
        model = AlphaFold(of_cfg)
    evo = sum(p.numel() for p in model.evoformer.parameters())
    total = sum(p.numel() for p in model.parameters())
    return {"total": total, "evoformer": evo, "blocks": of_cfg.model.evoformer_stack.no_blocks}


def _inputs(of_cfg, s: int, n: int, device):
    import torch

    g = torch.Generator().manual_seed(0)
    c_m, c_z = of_cfg.globals.c_m, of_cfg.globals.c_z
    m = torch.randn(s, n, c_m, generator=g).to(device)
    z = torch.randn(n, n, c_z, generator=g).to(device)
    return m, z, torch.ones(s, n, device=device), torch.ones(n, n, device=device)


def measure(req: dict) -> dict:
    import torch

    from xopt.models.openfold.cpu import import_openfold
    from xopt.models.openfold.trunk import make_trunk

    import_openfold()
    if req.get("threads"):
        torch.set_num_threads(int(req["threads"]))
    on_gpu = req.get("device", "cpu") == "cuda"
    device = torch.device("cuda" if on_gpu else "cpu")
    stack, of_cfg = build_stack(req["config"], int(req.get("blocks", 1)))
    trunk = make_trunk(stack, req["settings"], inplace_safe=True).to(device)
    if on_gpu:
        return _measure_cuda(req, trunk, of_cfg, device)
    from xopt.runtime.memory import host_peak_mb, host_rss_mb, reset_host_peak

    # warm-up at a tiny shape: oneDNN/OpenMP allocate their pools once per process
    with torch.no_grad():
        trunk(*_inputs(of_cfg, 2, 8, device))
    base = host_rss_mb()
    m, z, mm, pm = _inputs(of_cfg, int(req["s"]), int(req["n"]), device)
    reset_host_peak()
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad():
        m, z, s = trunk(m, z, mm, pm)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    peak = host_peak_mb()
    finite = bool(torch.isfinite(z).all() and torch.isfinite(s).all())
    del m, z, s
    for _ in range(int(req.get("repeats", 1)) - 1):  # time only: the peak is the first run's
        args = _inputs(of_cfg, int(req["s"]), int(req["n"]), device)
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.no_grad():
            trunk(*args)
        seconds, cpu_seconds = min(seconds, time.perf_counter() - t0), min(cpu_seconds, time.process_time() - c0)
        del args
    # cpu_seconds (all threads) is the steadier number on a shared host: wall time there
    # mostly measures the neighbours
    return {"peak_mb": peak - base, "seconds": seconds, "cpu_seconds": cpu_seconds, "finite": finite,
            "kind": "host-vmhwm", "device": "cpu", "threads": torch.get_num_threads()}


def _measure_cuda(req: dict, trunk, of_cfg, device) -> dict:  # pragma: no cover - needs a GPU
    """GPU path: runs under the profile's cap so an over-budget point fails like it would on
    the device instead of borrowing memory the budget does not have."""
    import torch

    total = torch.cuda.get_device_properties(device).total_memory
    cap_mb = float(req.get("cap_mb") or total / 2**20)
    torch.cuda.set_per_process_memory_fraction(min(1.0, cap_mb * 2**20 / total), device)
    nvml_before = _nvml_used_mb()
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    try:
        m, z, mm, pm = _inputs(of_cfg, int(req["s"]), int(req["n"]), device)
        torch.cuda.reset_peak_memory_stats(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        with torch.no_grad():
            m, z, s = trunk(m, z, mm, pm)
        end.record()
        torch.cuda.synchronize(device)
    except torch.cuda.OutOfMemoryError:
        return {"oom": True, "device": "cuda", "kind": "cuda-allocator"}
    peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    nvml_after = _nvml_used_mb()
    return {"peak_mb": peak, "seconds": start.elapsed_time(end) / 1e3, "kind": "cuda-allocator",
            "device": "cuda", "finite": bool(torch.isfinite(z).all()),
            "nvml_delta_mb": (nvml_after - nvml_before) if nvml_after and nvml_before else None,
            "reserved_mb": torch.cuda.max_memory_reserved(device) / 2**20}


def _nvml_used_mb():  # pragma: no cover - needs a GPU
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        return pynvml.nvmlDeviceGetMemoryInfo(h).used / 2**20
    except pynvml.NVMLError:  # no driver: the caller falls back to the allocator's numbers
        return None


def point(req: dict) -> dict:
    """What `xopt.fitting.measure_in_fresh_process` calls: the parameter count, or one peak."""
    import warnings

    warnings.simplefilter("ignore")
    return model_parameters(req["config"]) if req.get("what") == "parameters" else measure(req)
