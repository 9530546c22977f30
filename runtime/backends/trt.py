"""Backend `trt`: a serialized engine through the TensorRT runtime, or the TensorRT-RTX
runtime when the engine's metadata says it is an RTX one.

Order of checks on load (each a UserError, never a crash): the metadata sidecar exists
and the engine bytes match it; the engine's TensorRT flavour is installed at the version
it was built with; NVML reports a GPU of a compute capability the engine targets; the
flavour's Runtime starts in a child process. Only then is a Runtime created here.

I/O lives in torch CUDA tensors (torch is the CUDA library a GPU user of xopt already
has); latency is host wall time per call plus device time between CUDA events around
the enqueue, like trtexec's "GPU compute" beside "host latency".
GPU-only: everything after the checks in `_load`, and `_run`; on a machine without an
NVIDIA driver `probe()` says so and `_load` stops at the NVML check.
"""
from __future__ import annotations

import time

import numpy as np

from xopt.errors import BudgetError, UserError
from xopt.extras import require
from xopt.runtime import engine_meta, trt_env
from xopt.runtime.backends.base import Backend, Session, register_backend

_DTYPES = {  # TensorRT DataType member -> (torch dtype name, numpy dtype or None when numpy lacks it)
    "FLOAT": ("float32", np.float32), "HALF": ("float16", np.float16), "BF16": ("bfloat16", None),
    "INT8": ("int8", np.int8), "UINT8": ("uint8", np.uint8), "INT32": ("int32", np.int32),
    "INT64": ("int64", np.int64), "BOOL": ("bool", np.bool_),
}


def check_shapes(meta: dict, feeds) -> None:
    """Feed shapes must lie inside the optimisation profile the engine was built with."""
    for name, arr in feeds.items():
        prof = meta["shapes"].get(name)
        if prof is None:
            continue
        shape = list(np.shape(arr))
        inside = len(shape) == len(prof["min"]) and all(
            lo <= d <= hi for d, lo, hi in zip(shape, prof["min"], prof["max"]))
        if not inside:
            raise UserError(f"input {name} has shape {shape}, outside the engine's profile "
                            f"min {prof['min']} .. max {prof['max']}",
                            f"resize the input, or rebuild with wider shapes: {meta.get('rebuild', 'xopt export --force')}")


def probe() -> tuple[bool, str]:
    installed = [f for f in trt_env.FLAVOURS.values() if f.installed_version()]
    if not installed:
        return False, 'tensorrt not installed: pip install "xopt[trt]" (or "xopt[trt-rtx]")'
    if trt_env.first_gpu() is None:
        return False, "no NVIDIA driver (NVML)"
    ok, why = _torch_cuda()
    if not ok:
        return False, why
    reasons = []
    for fl in installed:
        ok, why = trt_env.probe_runtime(fl.name)
        if ok:
            return True, ""
        reasons.append(why)
    return False, "; ".join(reasons)


def _torch_cuda() -> tuple[bool, str]:
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return False, "the trt backend keeps I/O in torch CUDA tensors and torch is not installed"
    import torch

    if not torch.cuda.is_available():
        return False, f"torch {torch.__version__} has no CUDA (install a CUDA build of torch)"
    return True, ""


class TrtSession(Session):
    backend = "trt"

    def _load(self, path, cap_mb: float | None = None, runtime_cache: str | None = None, **_ignored):
        meta = engine_meta.read(path)
        fl = trt_env.flavour(meta["flavour"])
        engine_meta.check_file(path, meta)
        # A TensorRT version mismatch needs no GPU to tell, and no GPU would make the engine
        # usable: say it first (the compute capability is checked below, once a GPU is seen).
        engine_meta.check_loadable(path, meta, fl.installed_version(), None)
        gpu = trt_env.require_gpu(f"running engine {path} (backend trt)")
        engine_meta.check_loadable(path, meta, fl.installed_version(), gpu["compute_capability"])
        ok, why = trt_env.probe_runtime(fl.name)
        if not ok:
            raise UserError(f"the {fl.module} runtime does not start on this machine: {why}",
                            "check the NVIDIA driver and CUDA libraries TensorRT needs")
        ok, why = _torch_cuda()
        if not ok:
            raise UserError(why, "pip install a CUDA build of torch")
        # GPU-only from here: NVML saw a GPU and a child process created the Runtime.
        import torch

        self._torch = torch
        self.meta = meta
        self.providers = [f"{fl.module} {meta['trt_version']} ({meta['sm']})"]
        trt = require(fl.module, fl.extra)
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        data = open(path, "rb").read()
        self._runtime = trt.Runtime(self._logger)
        if fl.name == "trt-rtx":
            _check_rtx_validity(trt, self._runtime, data, path, meta)
        t0 = time.perf_counter()
        self._engine = self._runtime.deserialize_cuda_engine(data)
        self.timings.deserialize_ms = (time.perf_counter() - t0) * 1e3
        if self._engine is None:
            raise UserError(f"{fl.module} could not deserialise {path} (see its log above)",
                            engine_meta.rebuild_hint(meta))
        if cap_mb:
            self._apply_cap(float(cap_mb))
        t0 = time.perf_counter()
        if fl.name == "trt-rtx":
            self._context = self._rtx_context(runtime_cache, meta, gpu)
        else:
            self._context = self._engine.create_execution_context()
        self.timings.context_ms = (time.perf_counter() - t0) * 1e3
        if self._context is None:
            raise UserError(f"no execution context for {path} (out of GPU memory?)", "close other GPU programs")
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        is_input = {n: self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = [n for n in names if is_input[n]]
        self.output_names = [n for n in names if not is_input[n]]
        self._dtype = {n: _DTYPES[self._engine.get_tensor_dtype(n).name] for n in names}
        self._stream = torch.cuda.Stream()

    def _rtx_context(self, runtime_cache, meta: dict, gpu: dict):
        """TensorRT-RTX compiles its kernels just in time for this GPU; a runtime cache file keeps
        them across processes, so only the first load on a machine pays for compilation."""
        from pathlib import Path

        from xopt.cache import cache_root

        self.runtime_cache = {"path": None, "loaded": False}
        config = self._engine.create_runtime_config() if hasattr(self._engine, "create_runtime_config") else None
        if config is None or runtime_cache == "":
            return self._engine.create_execution_context()
        gpu_tag = "".join(ch for ch in gpu["name"] if ch.isalnum())
        path = Path(runtime_cache) if runtime_cache else (
            cache_root() / "runtime" / f"{meta['engine_sha256'][:16]}-{gpu_tag}-{meta['trt_version']}.cache")
        cache = config.create_runtime_cache()
        if path.exists():
            self.runtime_cache["loaded"] = bool(cache.deserialize(path.read_bytes()))
        config.set_runtime_cache(cache)
        self._rt_cache, self.runtime_cache["path"] = cache, str(path)
        return self._engine.create_execution_context(config)

    def _save_runtime_cache(self) -> None:
        cache = getattr(self, "_rt_cache", None)
        if cache is None:
            return
        from xopt.atomic import write_bytes

        try:
            write_bytes(self.runtime_cache["path"], bytes(cache.serialize()), force=True)
        except (OSError, UserError) as exc:  # a cache that cannot be written only costs the next load time
            import warnings

            warnings.warn(f"TensorRT-RTX runtime cache not saved: {exc}", RuntimeWarning, stacklevel=2)

    def _apply_cap(self, cap_mb: float) -> None:
        """Stand in for a smaller GPU: cap torch's allocator and refuse an engine that needs more."""
        torch = self._torch
        total_mb = torch.cuda.get_device_properties(0).total_memory / 2**20
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap_mb / total_mb))
        need = getattr(self._engine, "device_memory_size_v2", None) or getattr(self._engine, "device_memory_size", 0)
        if need / 2**20 > cap_mb:
            raise BudgetError(f"engine {self.path} (needs {need / 2**20:.0f} MiB of activation memory; cap {cap_mb:.0f})",
                              "rebuild with a smaller max shape or workspace")
        self.cap_mb = cap_mb

    def _run(self, feeds):
        torch = self._torch
        check_shapes(self.meta, feeds)
        keep = []
        with torch.cuda.stream(self._stream):
            for name in self.input_names:
                tdtype, npdtype = self._dtype[name]
                arr = np.ascontiguousarray(feeds[name] if npdtype is None else feeds[name].astype(npdtype, copy=False))
                t = torch.from_numpy(arr).to("cuda", non_blocking=False).to(getattr(torch, tdtype))
                keep.append(t)
                self._context.set_input_shape(name, tuple(arr.shape))
                self._context.set_tensor_address(name, t.data_ptr())
            outputs = {}
            for name in self.output_names:
                shape = tuple(self._context.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise UserError(f"output {name} has a data-dependent shape {shape}", "the trt backend needs shapes "
                                    "TensorRT can infer from the inputs")
                outputs[name] = torch.empty(shape, dtype=getattr(torch, self._dtype[name][0]), device="cuda")
                self._context.set_tensor_address(name, outputs[name].data_ptr())
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(self._stream)
            ok = self._context.execute_async_v3(self._stream.cuda_stream)
            end.record(self._stream)
        end.synchronize()
        if not ok:
            raise UserError(f"TensorRT failed to run {self.path} (see its log above)", "check the input shapes")
        if self.timings.first_run_ms is not None:  # like run_ms, device times exclude the first (warm-up) call
            self.timings.device_ms.append(start.elapsed_time(end))
        return {n: (t.float() if t.dtype == torch.bfloat16 else t).cpu().numpy() for n, t in outputs.items()}

    def _close(self):
        self._save_runtime_cache()
        self._rt_cache = None
        for attr in ("_context", "_engine", "_runtime"):
            if hasattr(self, attr):
                setattr(self, attr, None)

    def info(self) -> dict:
        out = super().info()
        meta = getattr(self, "meta", {})
        out.update({k: meta.get(k) for k in ("flavour", "trt_version", "sm", "precision", "shapes")})
        if getattr(self, "cap_mb", None):
            out["memory_cap_mb"] = self.cap_mb
        if getattr(self, "runtime_cache", None):
            out["runtime_cache"] = self.runtime_cache
        return out


def _check_rtx_validity(trt, runtime, data: bytes, path, meta: dict) -> None:
    """TensorRT-RTX reads the engine header and says why it would not run here, before deserialising."""
    check = getattr(runtime, "get_engine_validity", None)
    if check is None:
        return
    validity, diagnostics = check(data)
    if validity == trt.EngineValidity.INVALID:
        causes = [m for m, v in trt.EngineInvalidityDiagnostics.__members__.items() if diagnostics & int(v)]
        raise UserError(f"TensorRT-RTX reports engine {path} invalid here ({', '.join(causes) or 'no cause given'})",
                        engine_meta.rebuild_hint(meta))


register_backend(Backend(
    name="trt", session=TrtSession, probe=probe, artifact="engine",
    description="TensorRT / TensorRT-RTX engine on an NVIDIA GPU (torch CUDA I/O, CUDA-event device timing)",
    device="cuda",
))
