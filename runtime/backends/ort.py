"""ONNX Runtime backends. GPU providers are verified after session creation:
onnxruntime-gpu lists CUDA/TensorRT as available even when their libraries cannot
load, then silently runs on CPU.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from xopt.errors import MissingExtraError, UserError
from xopt.extras import onnxruntime, ort_conflict, require
from xopt.runtime.backends.base import Backend, Session, register_backend

_LEVELS = {"disabled": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
           "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def max_threads() -> int:
    """The most intra-op threads a session may ask for: 8 per CPU (oversubscription past that
    only queues), at least 64."""
    return max(64, 8 * (os.cpu_count() or 1))


def session_options(ort, graph_optimization_level: str = "all", disabled_optimizers=(), intra_op_num_threads=0,
                    enable_profiling: bool = False, enable_cpu_mem_arena: bool = True):
    so = ort.SessionOptions()
    # These come from manifests (ort_options) and callers: refuse bad ones in one line.
    if not isinstance(graph_optimization_level, str) or graph_optimization_level not in _LEVELS:
        raise UserError(f"unknown graph_optimization_level {graph_optimization_level!r}",
                        f"use one of {', '.join(_LEVELS)}")
    if isinstance(intra_op_num_threads, bool) or not isinstance(intra_op_num_threads, int) or intra_op_num_threads < 0:
        raise UserError(f"intra_op_num_threads must be a non-negative integer, not {intra_op_num_threads!r}",
                        "fix the option (0 lets ONNX Runtime choose)")
    if intra_op_num_threads > max_threads():  # a hand-edited manifest: 31,650 threads hung a test machine
        raise UserError(f"intra_op_num_threads {intra_op_num_threads} is more than this machine can use "
                        f"({os.cpu_count()} CPUs)", f"use at most {max_threads()} (0 lets ONNX Runtime choose)")
    if not isinstance(disabled_optimizers, (list, tuple)) or not all(isinstance(o, str) for o in disabled_optimizers):
        raise UserError(f"disabled_optimizers must be a list of optimizer names, not {disabled_optimizers!r}",
                        "fix the option")
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[graph_optimization_level])
    if intra_op_num_threads:
        so.intra_op_num_threads = intra_op_num_threads
    so.enable_profiling = enable_profiling
    # off for models that run many sessions one after another: each arena keeps its own peak
    so.enable_cpu_mem_arena = bool(enable_cpu_mem_arena)
    so.log_severity_level = 3
    return so, list(disabled_optimizers)


def cuda_provider_options(cap_mb: float | None = None) -> dict[str, str]:
    """The CUDA execution provider's options xopt sets (ONNX Runtime's documented names):
    - cudnn_conv_algo_search HEURISTIC: cuDNN's heuristics pick each convolution's algorithm;
      the default EXHAUSTIVE benchmarks every algorithm inside the first run of each shape (a slow
      first inference, and its trial workspaces inflate the memory peak);
    - arena_extend_strategy kSameAsRequested: the arena grows by what is asked, not to the next
      power of two, so its size is close to what the model needs;
    - gpu_mem_limit: the arena's cap in bytes, the device profile's budget when the caller passes
      it (cap_mb). It bounds the arena only: the CUDA context and cuDNN/cuBLAS workspaces come on top.
    """
    out = {"arena_extend_strategy": "kSameAsRequested", "cudnn_conv_algo_search": "HEURISTIC"}
    if cap_mb:
        out["gpu_mem_limit"] = str(int(float(cap_mb) * 2**20))
    return out


def trt_provider_options(cache_dir: str | Path | None = None) -> dict[str, str]:
    """The TensorRT execution provider's options: engines and the timing cache persist in xopt's
    cache directory, so a second process (each profiled variant runs in its own) deserialises the
    engine instead of rebuilding it inside its first run. ONNX Runtime names the cached engines by
    graph, TensorRT version and compute capability, and rebuilds when one of them changes."""
    from xopt.cache import cache_root

    where = str(cache_root(cache_dir) / "ort-trt")
    return {"trt_engine_cache_enable": "True", "trt_engine_cache_path": where,
            "trt_timing_cache_enable": "True", "trt_timing_cache_path": where}


class OrtSession(Session):
    backend = "ort-cpu"
    providers_wanted: tuple = ("CPUExecutionProvider",)

    def _provider_defaults(self, cap_mb, cache_dir) -> dict[str, dict]:
        return {}

    def _load(self, path, graph_optimization_level="all", disabled_optimizers=(), intra_op_num_threads=0,
              provider_options=None, enable_cpu_mem_arena=True, cap_mb=None, cache_dir=None, **_ignored):
        ort = onnxruntime()
        so, disabled = session_options(ort, graph_optimization_level, disabled_optimizers, intra_op_num_threads,
                                       enable_cpu_mem_arena=enable_cpu_mem_arena)
        if not isinstance(provider_options or {}, dict) or not all(
                isinstance(o, dict) for o in (provider_options or {}).values()):
            raise UserError(f"provider_options must map provider names to options, not {provider_options!r}",
                            "fix the option")
        defaults = self._provider_defaults(cap_mb, cache_dir)
        # the caller's options win over xopt's defaults, key by key
        providers = [(p, {**defaults.get(p, {}), **{k: str(v) for k, v in (provider_options or {}).get(p, {}).items()}})
                     for p in self.providers_wanted]
        for p, opts in providers:
            if p == "TensorrtExecutionProvider" and opts.get("trt_engine_cache_path"):
                Path(opts["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)
        if self.providers_wanted[0] != "CPUExecutionProvider":
            providers.append(("CPUExecutionProvider", {}))
        try:
            self._sess = ort.InferenceSession(str(path), sess_options=so, providers=providers,
                                              disabled_optimizers=disabled or None)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/NoSuchFile types
            raise _load_error(path, exc) from exc
        self.providers = self._sess.get_providers()
        wanted = self.providers_wanted[0]
        if self.providers[0] != wanted:
            self._sess = None
            raise UserError(f"{self.backend}: ONNX Runtime fell back to {self.providers[0]} ({wanted} did not load)",
                            "install the CUDA/cuDNN (and TensorRT) libraries onnxruntime-gpu needs, or use --backend ort-cpu")
        self.provider_options = _effective(self._sess, providers)
        self.input_names = [i.name for i in self._sess.get_inputs()]
        self.output_names = [o.name for o in self._sess.get_outputs()]
        self.input_shapes = {i.name: list(i.shape) for i in self._sess.get_inputs()}
        self.output_shapes = {o.name: list(o.shape) for o in self._sess.get_outputs()}
        self._input_types = {i.name: i.type for i in self._sess.get_inputs()}

    def _run(self, feeds):
        feeds = {k: np.ascontiguousarray(v) for k, v in feeds.items()}
        try:
            outs = self._sess.run(self.output_names, feeds)
        except Exception as exc:
            # Wrong rank, size or element type of a feed (a graph that is not the one the caller
            # thinks) is the user's to fix; ORT's other failures (out of memory included) stay as they are.
            if type(exc).__name__ != "InvalidArgument":
                raise
            raise UserError(f"the inputs do not fit {self.path}: {str(exc).splitlines()[0][:300]}",
                            f"feed what the graph expects ({_describe(self._sess.get_inputs())}), "
                            "or pass the model the feeds were made for") from exc
        return dict(zip(self.output_names, outs))

    def _close(self):
        self._sess = None

    def info(self) -> dict:
        return {**super().info(), "provider_options": getattr(self, "provider_options", {})}


def _effective(sess, asked: list[tuple[str, dict]]) -> dict[str, dict]:
    """The options ONNX Runtime reports for the providers xopt configured (what it really took)."""
    try:
        got = sess.get_provider_options()
    except Exception:  # noqa: BLE001 - an older build without the call: report what was asked
        got = {}
    return {p: {k: got.get(p, {}).get(k, v) for k, v in opts.items()} for p, opts in asked if opts}


def _describe(inputs) -> str:
    return ", ".join(f"{i.name} {i.type} {list(i.shape)}" for i in inputs)


def _load_error(path, exc) -> UserError:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return UserError(f"ONNX Runtime cannot load {path}: {text[:300]}",
                     "the file is corrupt or not an ONNX model; re-export it with xopt export --force")


class OrtCudaSession(OrtSession):
    backend = "ort-cuda"
    providers_wanted = ("CUDAExecutionProvider",)

    def _provider_defaults(self, cap_mb, cache_dir) -> dict[str, dict]:
        return {"CUDAExecutionProvider": cuda_provider_options(cap_mb)}


class OrtTrtSession(OrtSession):
    backend = "ort-trt"
    providers_wanted = ("TensorrtExecutionProvider", "CUDAExecutionProvider")

    def _provider_defaults(self, cap_mb, cache_dir) -> dict[str, dict]:
        return {"TensorrtExecutionProvider": trt_provider_options(cache_dir),
                "CUDAExecutionProvider": cuda_provider_options(cap_mb)}


def _probe_cpu() -> tuple[bool, str]:
    try:
        ort = onnxruntime()
    except UserError as exc:
        return False, str(exc)
    conflict = ort_conflict()
    if conflict:
        return False, conflict
    return "CPUExecutionProvider" in ort.get_available_providers(), f"onnxruntime {ort.__version__}"


@functools.lru_cache(maxsize=None)
def probe_provider(provider: str) -> tuple[bool, str]:
    """Create a real one-node session on `provider` and read back which provider it got."""
    ok, why = _probe_cpu()
    if not ok:
        return ok, why
    from xopt.machine import gpus

    ort = onnxruntime()
    if provider not in ort.get_available_providers():
        return False, f"{provider} is not in this onnxruntime build: pip install \"xopt[gpu]\" (not with onnxruntime)"
    if not gpus():
        return False, "no NVIDIA GPU/driver visible to NVML"
    try:
        onnx = require("onnx", "gpu", "the GPU providers are probed with a one-node ONNX model")
    except MissingExtraError as exc:
        return False, str(exc)
    TensorProto, helper = onnx.TensorProto, onnx.helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    try:
        sess = ort.InferenceSession(model.SerializeToString(), providers=[provider, "CPUExecutionProvider"])
    except Exception as exc:  # provider libraries missing surface as generic ORT failures
        return False, f"{provider} failed to load: {str(exc).splitlines()[0][:200]}"
    got = sess.get_providers()[0]
    if got != provider:
        return False, f"{provider} is listed but did not load (session fell back to {got}); CUDA/cuDNN/TensorRT libraries missing"
    onnx.checker.check_model(model)
    return True, f"{provider} loads"


register_backend(Backend("ort-cpu", OrtSession, _probe_cpu, "onnx", "ONNX Runtime, CPU execution provider"))
register_backend(Backend("ort-cuda", OrtCudaSession, lambda: probe_provider("CUDAExecutionProvider"), "onnx",
                         "ONNX Runtime, CUDA execution provider (onnxruntime-gpu)", device="cuda"))
register_backend(Backend("ort-trt", OrtTrtSession, lambda: probe_provider("TensorrtExecutionProvider"), "onnx",
                         "ONNX Runtime, TensorRT execution provider (onnxruntime-gpu + TensorRT 10)", device="cuda"))
