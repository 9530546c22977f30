"""GPU backends configured as ONNX Runtime documents, and the torch backend on its device.

onnxruntime here is the CPU build, so the CUDA/TensorRT providers are stood in by a session that
reports the providers and options it was asked for (what onnxruntime-gpu does when they load);
the graph, its inputs and outputs are a real CPU session's."""
from __future__ import annotations

import numpy as np
import pytest

from xopt.profiles import get_profile
from xopt.runtime import load
from xopt.runtime.backends.ort import cuda_provider_options, trt_provider_options
from xopt.testing import tiny_conv_onnx, tiny_feeds

ort = pytest.importorskip("onnxruntime")
BUDGET = get_profile("rtx3060-laptop-12gb").budget_mb


@pytest.fixture
def gpu_ort(monkeypatch):
    real, asked = ort.InferenceSession, []

    class ProvidersLoaded:
        def __init__(self, path, sess_options=None, providers=None, disabled_optimizers=None):
            asked.append(providers)
            self._providers = providers
            self._real = real(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

        def get_providers(self):
            return [p for p, _ in self._providers]

        def get_provider_options(self):
            return {p: {k: str(v) for k, v in o.items()} for p, o in self._providers}

        def __getattr__(self, name):
            return getattr(self._real, name)

    monkeypatch.setattr(ort, "InferenceSession", ProvidersLoaded)
    return asked


def test_the_cuda_provider_gets_the_documented_options_and_the_budget_as_arena_limit(gpu_ort, tmp_path):
    path = tiny_conv_onnx(tmp_path / "m.onnx")
    with load(path, backend="ort-cuda", cap_mb=BUDGET) as s:
        out = s.run(tiny_feeds(1)[0])
        info = s.info()
    (providers,) = gpu_ort
    assert [p for p, _ in providers] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    cuda = providers[0][1]
    assert cuda == {"arena_extend_strategy": "kSameAsRequested", "cudnn_conv_algo_search": "HEURISTIC",
                    "gpu_mem_limit": str(int(BUDGET * 2**20))}
    assert info["provider_options"] == {"CUDAExecutionProvider": cuda}  # recorded in the session facts
    assert out["y"].shape == (1, 1, 32, 32)


def test_the_callers_provider_options_win_key_by_key(gpu_ort, tmp_path):
    path = tiny_conv_onnx(tmp_path / "m.onnx")
    with load(path, backend="ort-cuda", provider_options={"CUDAExecutionProvider": {"cudnn_conv_algo_search": "EXHAUSTIVE"}}):
        pass
    cuda = gpu_ort[0][0][1]
    assert cuda["cudnn_conv_algo_search"] == "EXHAUSTIVE" and cuda["arena_extend_strategy"] == "kSameAsRequested"
    assert "gpu_mem_limit" not in cuda  # no budget passed: the arena is not limited


def test_the_tensorrt_provider_caches_engines_in_xopts_cache_dir(gpu_ort, tmp_path):
    path = tiny_conv_onnx(tmp_path / "m.onnx")
    with load(path, backend="ort-trt", cache_dir=tmp_path / "cache", cap_mb=BUDGET) as s:
        info = s.info()
    trt, cuda = gpu_ort[0][0][1], gpu_ort[0][1][1]
    where = str(tmp_path / "cache" / "ort-trt")
    assert trt == {"trt_engine_cache_enable": "True", "trt_engine_cache_path": where,
                   "trt_timing_cache_enable": "True", "trt_timing_cache_path": where}
    assert (tmp_path / "cache" / "ort-trt").is_dir() and cuda == cuda_provider_options(BUDGET)
    assert info["provider_options"]["TensorrtExecutionProvider"] == trt
    assert trt_provider_options(tmp_path)["trt_engine_cache_path"] == str(tmp_path / "ort-trt")


def test_the_cpu_backend_is_untouched(tmp_path):
    with load(tiny_conv_onnx(tmp_path / "m.onnx"), backend="ort-cpu", cap_mb=BUDGET) as s:
        assert s.providers == ["CPUExecutionProvider"] and s.info()["provider_options"] == {}


def test_profiled_gpu_backends_get_the_profile_budget_as_their_cap():
    from xopt.analysis.worker import _session_options

    gpu, cpu = get_profile("rtx3060-laptop-12gb"), get_profile("cpu")
    assert _session_options({"backend": "ort-cuda"}, gpu) == {"cap_mb": BUDGET}
    assert _session_options({"backend": "ort-cuda", "session_options": {"cap_mb": 4000}}, gpu) == {"cap_mb": 4000}
    assert _session_options({"backend": "ort-cpu", "session_options": {"intra_op_num_threads": 2}}, gpu) == {
        "intra_op_num_threads": 2}
    assert _session_options({"backend": "ort-cuda"}, cpu) == {}


def test_the_torch_backend_moves_its_inputs_to_its_device():
    """`meta` stands for a second device (this machine has no CUDA): the module must see its
    inputs there, not on the CPU they arrive on."""
    import torch

    from xopt.runtime.backends.torch_eager import torch_outputs

    class Where(torch.nn.Module):
        def forward(self, x):
            self.seen = x.device
            return torch.zeros(1, 2)

    m = Where()
    out = torch_outputs(m, {"x": np.zeros((1, 3), np.float32)}, ["y"], torch.device("meta"))
    assert m.seen.type == "meta" and out["y"].shape == (1, 2)
    torch_outputs(m, {"x": np.zeros((1, 3), np.float32)}, ["y"])
    assert m.seen.type == "cpu"
