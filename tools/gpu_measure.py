#!/usr/bin/env python
"""PyTorch CUDA baselines of every registered model whose packages are installed: FP32, TF32,
FP16 and BF16, each model x precision in a process of its own.

In each child, in this order: the NVML memory monitor starts; the CUDA context is created and
its memory read (the context baseline); torch's allocator is capped at the device profile's
VRAM budget; the weights go to the GPU; the drift inputs run and their outputs are checked
finite; at least 10 warm-up runs and a synchronise; then the timed runs (CUDA events beside
host wall time). The parent then reports, per result and before any latency: finiteness and
drift against this GPU's FP32 (the model's own drift terms, tensor statistics and its gate
against FP32's noise floor). Memory is reported three ways, each with its method: the context
baseline, the NVML process peak (or, where NVML lists no figure for this PID, as in
PID-namespaced containers, the device-wide increase, and it says so), and the torch allocator
peak. The fit is judged against the NVML figure, which includes the context the cap does not.

The cap bounds torch's allocator only; the measuring GPU is not the profile's, so its timings
never judge the profile's throughput targets ("not measured here"). ONNX Runtime CUDA/TensorRT
and TensorRT engines are not measured by this tool.

Without an NVIDIA GPU (or with a CPU-only torch) it measures nothing, says why in one line and
exits with status 2.

    python tools/gpu_measure.py [--models modnet,demucs] [--precisions fp32,tf32,fp16,bf16]
        [--iters 30] [--warmup 10] [--profile rtx3060-laptop-12gb] [--out FILE] [--budget-s 240]
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

NO_GPU_EXIT = 2
PRECISIONS = ("fp32", "tf32", "fp16", "bf16")
MIN_WARMUP = 10
DEVICE = "cuda"  # CPU tests point this at "cpu" with torch.cuda and NVML stood in by fakes
CAP_NOTE = ("torch's per-process allocator fraction set to the profile's VRAM budget; the CUDA context, "
            "cuDNN/cuBLAS workspaces and other libraries are outside it, which is why the fit is judged on NVML")
CAST_NOTE = "module.to(dtype): every parameter and op in that type (no autocast), the worst case for overflow"
AUTOCAST_NOTE = ("torch.autocast with FP32 weights (the full cast failed, see full_cast): matmuls and convolutions "
                 "in the low precision, reductions and norms as autocast chooses")


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


# ---------------------------------------------------------------- child: one model x precision

def tf32_mode(torch, on: bool) -> dict:
    """Set TF32 for matmuls and cuDNN convolutions (PyTorch >= 2.9: fp32_precision, else the
    allow_tf32 flags, never both: mixing the two APIs is an error there) and read it back."""
    mm, conv = torch.backends.cuda.matmul, getattr(torch.backends.cudnn, "conv", None)
    if hasattr(mm, "fp32_precision") and conv is not None and hasattr(conv, "fp32_precision"):
        mm.fp32_precision = conv.fp32_precision = "tf32" if on else "ieee"
        return {"api": "fp32_precision", "matmul": mm.fp32_precision, "cudnn_conv": conv.fp32_precision}
    mm.allow_tf32 = torch.backends.cudnn.allow_tf32 = on
    return {"api": "allow_tf32", "matmul": mm.allow_tf32, "cudnn_conv": torch.backends.cudnn.allow_tf32}


def _outputs(torch, out, names) -> dict:
    if isinstance(out, torch.Tensor):
        out = (out,)
    elif isinstance(out, dict):
        out = tuple(out[n] for n in names)
    return {n: t.detach().float().cpu().numpy() for n, t in zip(names, out)}


def _summary(values: list[float]) -> dict:
    import numpy as np

    a = np.asarray(values)
    return {"n": len(values), "p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "mean": float(a.mean()), "min": float(a.min())}


def measure_one(job: dict) -> dict:
    """One model at one precision in this process; its outputs (and FP32's noisy ones) saved for
    the parent's drift. The monitor starts before CUDA is touched."""
    import numpy as np
    import torch

    from xopt.analysis.isolate import save_feeds
    from xopt.profiles import get_profile
    from xopt.registry import get_model
    from xopt.runtime.memory import MemoryMonitor

    spec, profile, precision = get_model(job["model"]), get_profile(job["profile"]), job["precision"]
    low = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    autocast = job.get("cast") == "autocast" and low is not None
    dtype = torch.float32 if autocast or low is None else low  # weights and inputs
    mode = (torch.autocast(device_type=torch.device(DEVICE).type, dtype=low) if autocast
            else contextlib.nullcontext())
    feeds = spec.profile_inputs(profile.model_targets(spec.name), job["drift_inputs"], job["seed"])
    feeds = [{n: f[n] for n in spec.input_names} for f in feeds]
    rng = np.random.default_rng(job["seed"] + 1)
    noisy = [spec.perturb(f, rng) for f in feeds] if precision == "fp32" else []
    res: dict = {"inputs": {n: list(feeds[0][n].shape) for n in spec.input_names},
                 "cast": AUTOCAST_NOTE if autocast else CAST_NOTE if low is not None else "float32"}
    with MemoryMonitor(gpu_index=0, torch_cuda=True) as mem:  # creates the CUDA context, after NVML's start
        total_mb = torch.cuda.get_device_properties(0).total_memory / 2**20
        fraction = min(1.0, job["cap_mb"] / total_mb)
        torch.cuda.set_per_process_memory_fraction(fraction)
        torch.zeros(1, device=DEVICE)  # the CUDA context exists from here (plus the allocator's first block)
        torch.cuda.synchronize()
        context = mem.gpu_now()
        res["tf32"] = tf32_mode(torch, precision == "tf32")
        t0 = time.perf_counter()
        built = spec.build(checkpoint=None, config=None, seed=job["seed"])
        res["build_ms"] = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        module = built.module.to(DEVICE, dtype).eval()
        torch.cuda.synchronize()
        res["to_device_ms"] = (time.perf_counter() - t0) * 1e3
        weights = mem.gpu_now()

        def args_of(feed):
            ts = [torch.from_numpy(np.ascontiguousarray(feed[n])).to(DEVICE) for n in spec.input_names]
            return [t.to(dtype) if t.is_floating_point() else t for t in ts]

        with torch.inference_mode(), mode:
            args = [args_of(f) for f in feeds]
            t0 = time.perf_counter()
            outs = [_outputs(torch, module(*args[0]), spec.output_names)]
            res["first_run_ms"] = (time.perf_counter() - t0) * 1e3
            outs += [_outputs(torch, module(*a), spec.output_names) for a in args[1:]]
            noisy_outs = [_outputs(torch, module(*args_of(f)), spec.output_names) for f in noisy]
            res["finite"] = {n: all(bool(np.isfinite(o[n]).all()) for o in outs) for n in spec.output_names}
            if all(res["finite"].values()):  # timing a model whose outputs are NaN/Inf would mean nothing
                for i in range(job["warmup"]):
                    module(*args[i % len(args)])
                torch.cuda.synchronize()
                host, device = [], []
                for i in range(job["iters"]):
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    t0 = time.perf_counter()
                    start.record()
                    module(*args[i % len(args)])
                    end.record()
                    end.synchronize()
                    host.append((time.perf_counter() - t0) * 1e3)
                    device.append(start.elapsed_time(end))
                res.update(warmup_runs=job["warmup"], host_ms=_summary(host), device_ms=_summary(device))
        del module, args
    save_feeds(Path(job["outputs"]), outs)
    if noisy:
        save_feeds(Path(job["workdir"]) / f"{spec.name}-feeds.npz", feeds)
        save_feeds(Path(job["workdir"]) / f"{spec.name}-noisy-feeds.npz", noisy)
        save_feeds(Path(job["workdir"]) / f"{spec.name}-noisy-outputs.npz", noisy_outs)
    m = mem.result
    by_method = "process_mb" if m["method"] == "nvml-process" else "device_delta_mb"
    res["memory"] = {
        "method": m["method"], "method_note": m["method_note"], "context_mb": context[by_method],
        "after_weights_mb": weights[by_method], "process_peak_mb": m["peak_mb"],
        "allocator_peak_mb": m["allocator_peak_mb"], "allocator_reserved_peak_mb": m["allocator_reserved_peak_mb"],
        "device_peak_mb": m["device_peak_mb"], "device_start_mb": m["device_start_mb"], "host_peak_mb": m["host_peak_mb"],
        "cap": {"cap_mb": job["cap_mb"], "fraction": fraction, "device_total_mb": total_mb},
        "budget_mb": job["cap_mb"], "fits_budget": m["peak_mb"] <= job["cap_mb"]}
    res["weights"] = built.weights.to_json()
    res["status"] = "ok" if all(res["finite"].values()) else "nonfinite"
    if res["status"] == "nonfinite":
        bad = [n for n, ok in res["finite"].items() if not ok]
        res["reason"] = f"NaN/Inf in {', '.join(bad)} on the drift inputs: not timed"
    return res


def child_main(job: dict) -> dict:
    """measure_one, with every failure turned into a result (a failing precision is a finding)."""
    import torch

    try:
        return measure_one(job)
    except torch.cuda.OutOfMemoryError as exc:
        return {"status": "oom", "reason": f"over the {job['cap_mb']:.0f} MiB cap: {str(exc)[:300]}"}
    except Exception as exc:  # noqa: BLE001 - reported with its traceback tail, the next job still runs
        tail = traceback.format_exc().strip().splitlines()[-6:]
        return {"status": "error", "reason": f"{type(exc).__name__}: {str(exc)[:300]}", "traceback": tail}


def launch_child(job: dict, timeout_s: float) -> dict:
    """Run one job in a fresh Python process (`gpu_measure.py --child JOB.json`); its output is
    passed on to this one's (the window keeps it in its log)."""
    job_path = Path(job["workdir"]) / f"{job['model']}-{job['precision']}.job.json"
    result_path = job_path.with_suffix(".result.json")
    job_path.write_text(json.dumps({**job, "result": str(result_path)}), encoding="utf-8")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(job_path)]
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout_s,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
        output, rc = proc.stdout, proc.returncode
    except subprocess.TimeoutExpired as exc:
        output, rc = exc.output or "", None
        output = output.decode(errors="replace") if isinstance(output, bytes) else output
    if output.strip():
        print(f"--- {job['model']} {job['precision']} (child output)\n{output.rstrip()}", flush=True)
    if rc is None:
        return {"status": "timeout", "reason": f"the child did not finish in {timeout_s:.0f} s"}
    if result_path.exists():
        return json.loads(result_path.read_text(encoding="utf-8"))
    tail = " | ".join(output.strip().splitlines()[-6:])[-600:]
    return {"status": "crashed", "reason": f"the child exited with status {rc} and no result: {tail}"}


# ---------------------------------------------------------------- parent: jobs, drift, report

def _drift(spec, work: Path, precision: str) -> dict:
    """This precision's outputs against FP32's on the same inputs, and FP32's own noise floor."""
    from xopt.analysis.isolate import load_feeds
    from xopt.analysis.profiler import drift_between
    from xopt.analysis.verdicts import drift_verdict

    feeds = load_feeds(work / f"{spec.name}-feeds.npz")
    refs = load_feeds(work / f"{spec.name}-fp32.npz")
    floor = drift_between(spec, refs, load_feeds(work / f"{spec.name}-noisy-outputs.npz"),
                          load_feeds(work / f"{spec.name}-noisy-feeds.npz"))
    drift = drift_between(spec, refs, load_feeds(work / f"{spec.name}-{precision}.npz"), feeds)
    return {"drift": drift, "noise_floor": floor, "drift_gate": drift_verdict(spec, drift, floor)}


def _ordered(r: dict) -> dict:
    """Status, finiteness and drift first, then latency and memory: the order a reader needs them."""
    first = ("status", "reason", "finite", "drift_gate", "drift", "noise_floor")
    return {**{k: r[k] for k in first if k in r}, **{k: v for k, v in r.items() if k not in first}}


def _line(key: str, r: dict) -> str:
    text = f"{key}: {r['status']}" + (f" ({r['reason']})" if r.get("reason") else "")
    if r.get("full_cast"):
        text += f" under torch.autocast (the full cast: {r['full_cast'].get('reason', r['full_cast']['status'])[:120]})"
    if r.get("drift_gate"):
        text += f"; drift vs FP32 {r['drift_gate']['text']} ({'within' if r['drift_gate']['passed'] else 'outside'} the gate)"
    if r.get("device_ms"):
        text += f"; device p50 {r['device_ms']['p50']:.2f} ms, host p50 {r['host_ms']['p50']:.2f} ms"
    mem = r.get("memory")
    if mem:
        text += (f"; VRAM context {mem['context_mb']:.0f} MiB, peak {mem['process_peak_mb']:.0f} MiB "
                 f"[{mem['method']}], allocator peak {mem['allocator_peak_mb']:.0f} MiB, "
                 f"{'fits' if mem['fits_budget'] else 'over'} the {mem['budget_mb']:.0f} MiB budget")
    return text


def _targets(spec, profile, r: dict, not_here: str | None) -> list[dict]:
    fps = profile.model_targets(spec.name).get("fps")
    if not fps or not r.get("host_ms"):
        return []
    value = 1e3 / r["host_ms"]["p50"]
    return [{"name": "throughput", "value": round(value, 2), "limit": fps, "unit": "fps",
             "passed": None if not_here else value >= fps, **({"status": f"not measured here ({not_here})"} if not_here else {})}]


def run(models: list[str] | None, precisions: list[str], iters: int, warmup: int, profile_name: str | None,
        seed: int, drift_inputs: int = 2, out: Path | None = None, budget_s: float = 420.0,
        child_timeout_s: float = 180.0, launch=None) -> dict:
    import torch

    from xopt.atomic import write_json
    from xopt.device_match import device_targets_not_here
    from xopt.machine import describe, gpus
    from xopt.profiles import get_profile
    from xopt.registry import list_models

    launch = launch or launch_child
    t_start = time.monotonic()
    profile = get_profile(profile_name)
    gpu = gpus()[0]
    not_here = device_targets_not_here(profile, True)
    specs = [s for s in list_models() if not models or s.name in models]
    report = {
        "schema_version": 2, "kind": "gpu-torch-baselines", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]), "complete": False,
        "gpu": gpu, "machine": describe(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(), "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "profile": {"name": profile.name, "budget_mb": profile.budget_mb, "gpu_names": list(profile.gpu_names),
                    "targets_judged_here": not_here is None, "why_not": not_here},
        "memory_cap": {"cap_mb": profile.budget_mb, "note": CAP_NOTE},
        "settings": {"precisions": precisions, "iters": iters, "warmup": warmup, "drift_inputs": drift_inputs,
                     "seed": seed, "cast": CAST_NOTE, "device": DEVICE,
                     "isolation": "each model x precision in a process of its own"},
        "not_measured": ["ONNX Runtime CUDA/TensorRT execution providers and TensorRT engines: xopt profile "
                         "--backend ort-cuda|ort-trt|trt on a machine with onnxruntime-gpu/TensorRT"],
        "results": {},
    }
    with tempfile.TemporaryDirectory(prefix="xopt-gpu-measure-") as tmp:
        work = Path(tmp)
        for spec in specs:
            missing = [p for p in spec.packages if importlib.util.find_spec(p) is None]
            for precision in ("fp32",) + tuple(p for p in precisions if p != "fp32"):
                key = f"{spec.name} torch {precision}"
                left = budget_s - (time.monotonic() - t_start)
                if missing:
                    r = {"status": "skipped", "reason": f"not installed here: {', '.join(missing)}"}
                elif precision != "fp32" and report["results"][f"{spec.name} torch fp32"]["status"] not in ("ok", "nonfinite"):
                    r = {"status": "skipped", "reason": "no FP32 reference to compare with"}
                elif left < 20:
                    r = {"status": "skipped", "reason": f"the {budget_s:.0f} s budget ran out"}
                else:
                    job = {"model": spec.name, "precision": precision, "profile": profile.name, "seed": seed,
                           "iters": iters, "warmup": warmup, "drift_inputs": drift_inputs, "cap_mb": profile.budget_mb,
                           "workdir": str(work), "outputs": str(work / f"{spec.name}-{precision}.npz")}
                    t0 = time.monotonic()
                    r = launch(job, min(child_timeout_s, left))
                    left = budget_s - (time.monotonic() - t_start)
                    if precision in ("fp16", "bf16") and r["status"] == "error" and left >= 20:
                        # a model that cannot run fully cast (e.g. a float32 buffer meeting a cast
                        # layer norm) is measured as PyTorch users would run it: under autocast
                        full = {k: r[k] for k in ("status", "reason") if k in r}
                        r = {**launch({**job, "cast": "autocast"}, min(child_timeout_s, left)), "full_cast": full}
                    r["wall_s"] = round(time.monotonic() - t0, 1)
                    if precision != "fp32" and r["status"] in ("ok", "nonfinite"):
                        try:
                            r.update(_drift(spec, work, precision))
                        except Exception as exc:  # noqa: BLE001 - the measurement stands; say what failed
                            r["drift_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
                    r["targets"] = _targets(spec, profile, r, not_here)
                report["results"][key] = _ordered({"model": spec.name, "precision": precision, **r})
                print(_line(key, report["results"][key]), flush=True)
                if out is not None:  # after every job: a window cut short still returns what it measured
                    write_json(out, report, force=True)
    report["complete"] = True
    report["wall_s"] = round(time.monotonic() - t_start, 1)
    if out is not None:
        write_json(out, report, force=True)
    return report


def default_out() -> Path:
    """$OUT (the GPU window's result folder) or the temporary directory: never the repository."""
    return Path(os.environ.get("OUT") or tempfile.gettempdir()) / f"gpu-measure-{time.strftime('%Y%m%d-%H%M%S')}.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    ap.add_argument("--models", default="", help="comma-separated model names (default: every registered model)")
    ap.add_argument("--precisions", default=",".join(PRECISIONS), help=f"subset of {','.join(PRECISIONS)}")
    ap.add_argument("--iters", type=int, default=30, help="timed runs per precision")
    ap.add_argument("--warmup", type=int, default=MIN_WARMUP, help=f"warm-up runs (at least {MIN_WARMUP})")
    ap.add_argument("--drift-inputs", type=int, default=2, help="inputs the drift against FP32 is measured on")
    ap.add_argument("--profile", default=None, help="device profile: input sizes and the VRAM budget (cap and fit)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget-s", type=float, default=420.0, help="stop starting jobs after this many seconds")
    ap.add_argument("--child-timeout-s", type=float, default=180.0)
    ap.add_argument("--out", default=None, help="output JSON (default: $OUT or the temporary directory)")
    ap.add_argument("--force", action="store_true", help="overwrite --out")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        job = json.loads(Path(args.child).read_text(encoding="utf-8"))
        Path(job["result"]).write_text(json.dumps(child_main(job)), encoding="utf-8")
        return 0
    precisions = [p for p in args.precisions.split(",") if p]
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad or args.warmup < MIN_WARMUP or args.iters < 1 or args.drift_inputs < 1:
        print(f"gpu_measure: bad arguments: precisions {bad or 'ok'}, --warmup >= {MIN_WARMUP}, --iters >= 1, "
              "--drift-inputs >= 1", file=sys.stderr)
        return 1
    from xopt.registry import list_models

    names = [m for m in args.models.split(",") if m]
    unknown = sorted(set(names) - {s.name for s in list_models()})
    if unknown:
        print(f"gpu_measure: unknown model(s) {', '.join(unknown)}; registered: "
              f"{', '.join(s.name for s in list_models())}", file=sys.stderr)
        return 1
    why = why_not_here()
    if why:
        print(f"gpu_measure: nothing measured: {why}. Run it on a machine with an NVIDIA GPU, its driver and a "
              "CUDA build of torch.", file=sys.stderr)
        return NO_GPU_EXIT
    out = Path(args.out) if args.out else default_out()
    if out.exists() and not args.force:
        print(f"gpu_measure: {out} exists; pass --force to overwrite it", file=sys.stderr)
        return 1
    run(names or None, precisions, args.iters, args.warmup, args.profile,
        args.seed, args.drift_inputs, out, args.budget_s, args.child_timeout_s)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
