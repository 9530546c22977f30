"""Version dispatch of the TensorRT builder configuration (TensorRT 10 vs 11 vs TensorRT-RTX).

Full TensorRT cannot be installed here, so these tests hand `configure` and the build
worker fake `tensorrt` modules that record every call; the fakes model only the API
surface of each version (TensorRT 11's has no FP16/INT8 flags and no calibrator base, so a
wrong dispatch fails with AttributeError). The graphs are real ONNX files.
"""
from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from xopt.errors import UserError
from xopt.optimize import _trt_build, _trt_graph
from xopt.optimize._trt_config import BuildRequest, configure, plan
from xopt.testing import TINY_SHAPES, tiny_conv_onnx, tiny_qdq_onnx

SHAPES = {"x": {"min": list(TINY_SHAPES["x"][0]), "opt": list(TINY_SHAPES["x"][1]), "max": list(TINY_SHAPES["x"][2])}}


class _Recorder:
    def __init__(self, calls, who):
        object.__setattr__(self, "_calls", calls)
        object.__setattr__(self, "_who", who)

    def __setattr__(self, name, value):
        self._calls.append((f"{self._who}.{name}=", value))
        object.__setattr__(self, name, value)


def fake_trt(version: str, flavour: str = "trt"):
    """A module with the builder API of TensorRT `version` (or TensorRT-RTX), recording calls."""
    calls: list = []
    m = types.ModuleType("tensorrt_rtx" if flavour == "trt-rtx" else "tensorrt")
    m.__version__ = version
    m.calls = calls
    major = int(version.split(".")[0])
    precision_flags = flavour == "trt" and major < 11
    m.BuilderFlag = types.SimpleNamespace(TF32="TF32", **({"FP16": "FP16", "INT8": "INT8"} if precision_flags else {}))
    m.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=1)
    m.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    m.HardwareCompatibilityLevel = types.SimpleNamespace(AMPERE_PLUS="AMPERE_PLUS")
    if flavour == "trt-rtx":
        m.ComputeCapability = types.SimpleNamespace(SM75="SM75", SM80="SM80", SM86="SM86", SM89="SM89",
                                                    __members__={"SM75": 0, "SM80": 1, "SM86": 2, "SM89": 3})
    if precision_flags:
        class IInt8EntropyCalibrator2:
            def __init__(self):
                calls.append(("calibrator.__init__",))
        m.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2

    class Logger:
        WARNING = 2

        def __init__(self, level=None):
            self.level = level
    m.Logger = Logger

    class Tensor:
        def __init__(self, name):
            self.name, self.dtype = name, "DataType.FLOAT"

    class Network:
        num_inputs = num_outputs = 1

        def get_input(self, i):
            return Tensor("x")

        def get_output(self, i):
            return Tensor("y")

    class Profile:
        def set_shape(self, *args):
            calls.append(("profile.set_shape",) + args)

    class TimingCache:
        def __init__(self, blob):
            self.blob = blob

        def serialize(self):
            return self.blob + b"+new"

    class Config(_Recorder):
        def set_memory_pool_limit(self, pool, size):
            calls.append(("config.set_memory_pool_limit", pool, size))

        def set_flag(self, flag):
            calls.append(("config.set_flag", flag))

        def set_compute_capability(self, cc, index):
            calls.append(("config.set_compute_capability", cc, index))

        def add_optimization_profile(self, profile):
            calls.append(("config.add_optimization_profile",))

        def create_timing_cache(self, blob):
            calls.append(("config.create_timing_cache", bytes(blob)))
            return TimingCache(bytes(blob))

        def set_timing_cache(self, cache, ignore_mismatch):
            calls.append(("config.set_timing_cache", ignore_mismatch))

    class Builder:
        def __init__(self, logger):
            calls.append(("Builder",))

        def create_network(self, flags):
            calls.append(("builder.create_network", flags))
            return Network()

        def create_builder_config(self):
            return Config(calls, "config")

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calls.append(("builder.build_serialized_network",))
            return b"fake-engine-bytes"
    m.Builder = Builder

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            calls.append(("parser.parse_from_file", path))
            return True
    m.OnnxParser = OnnxParser
    return m


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    d = tmp_path_factory.mktemp("graphs")
    fp32 = tiny_conv_onnx(d / "fp32.onnx")
    return {"fp32": fp32, "fp16": tiny_conv_onnx(d / "fp16.onnx", fp16=True), "int8": tiny_qdq_onnx(fp32, d / "int8.onnx")}


def _req(onnx, flavour="trt", precision="fp32", **kw):
    return BuildRequest(onnx=str(onnx), engine="", flavour=flavour, precision=precision, shapes=SHAPES,
                        workspace_mb=kw.pop("workspace_mb", 512), **kw)


def _configure(trt, req):
    p = plan(req, trt.__version__, _trt_graph.read(req.onnx))
    builder = trt.Builder(None)
    configure(trt, builder, None, req, p)
    return p, trt.calls


def _flags(calls):
    return [c[1] for c in calls if c[0] == "config.set_flag"]


def _network_flags(calls):
    return [c[1] for c in calls if c[0] == "builder.create_network"]


def test_trt10_fp16_sets_the_fp16_builder_flag_on_a_weakly_typed_network(graphs):
    p, calls = _configure(fake_trt("10.8.0"), _req(graphs["fp32"], precision="fp16"))
    assert not p.strongly_typed and _flags(calls) == ["FP16"] and _network_flags(calls) == [0]
    assert ("config.set_memory_pool_limit", "WORKSPACE", 512 << 20) in calls
    assert ("profile.set_shape", "x", (1, 3, 16, 16), (1, 3, 32, 32), (2, 3, 64, 64)) in calls
    assert not any(c[0] == "config.set_compute_capability" for c in calls)


def test_trt10_int8_qdq_sets_int8_only(graphs):
    _, calls = _configure(fake_trt("10.8.0"), _req(graphs["int8"], precision="int8"))
    assert _flags(calls) == ["INT8"]
    assert not any(c[0] == "config.int8_calibrator=" for c in calls)


def test_trt10_int8_without_qdq_uses_a_cache_only_calibrator(graphs, tmp_path):
    cache = tmp_path / "calib.cache"
    cache.write_bytes(b"TRT-CALIB-CACHE")
    trt = fake_trt("10.3.0")
    _, calls = _configure(trt, _req(graphs["fp32"], precision="int8", calibration_cache=str(cache)))
    assert _flags(calls) == ["INT8"]
    calibrator = next(c[1] for c in calls if c[0] == "config.int8_calibrator=")
    assert isinstance(calibrator, trt.IInt8EntropyCalibrator2)
    assert calibrator.read_calibration_cache() == b"TRT-CALIB-CACHE" and calibrator.get_batch(["x"]) is None


def test_trt10_int8_without_qdq_or_cache_is_a_user_error(graphs):
    with pytest.raises(UserError, match="no Q/DQ nodes"):
        _configure(fake_trt("10.8.0"), _req(graphs["fp32"], precision="int8"))


def test_trt10_reuses_the_timing_cache_file(graphs, tmp_path):
    tc = tmp_path / "timing.cache"
    tc.write_bytes(b"OLD")
    _, calls = _configure(fake_trt("10.8.0"), _req(graphs["fp32"], timing_cache=str(tc)))
    assert ("config.create_timing_cache", b"OLD") in calls and ("config.set_timing_cache", False) in calls


@pytest.mark.parametrize("version", ["11.0.0", "11.4.1"])
def test_trt11_is_strongly_typed_with_no_precision_flags(graphs, version):
    p, calls = _configure(fake_trt(version), _req(graphs["fp16"], precision="fp16"))
    assert p.strongly_typed and _flags(calls) == [] and _network_flags(calls) == [1 << 1]


def test_trt11_int8_takes_the_qdq_graph(graphs):
    p, calls = _configure(fake_trt("11.0.0"), _req(graphs["int8"], precision="int8"))
    assert p.strongly_typed and _flags(calls) == []


def test_trt11_refuses_a_precision_the_graph_does_not_carry(graphs):
    with pytest.raises(UserError, match="strongly typed.*fp32, not fp16"):
        _configure(fake_trt("11.0.0"), _req(graphs["fp32"], precision="fp16"))


def test_trt11_has_no_calibrators(graphs, tmp_path):
    cache = tmp_path / "c.cache"
    cache.write_bytes(b"x")
    with pytest.raises(UserError, match="no INT8 calibrators"):
        _configure(fake_trt("11.0.0"), _req(graphs["fp32"], precision="int8", calibration_cache=str(cache)))


def test_trt9_is_refused(graphs):
    with pytest.raises(UserError, match="too old"):
        _configure(fake_trt("9.3.0"), _req(graphs["fp32"]))


def test_trt_for_another_ampere_gpu_uses_hardware_compatibility(graphs):
    p, calls = _configure(fake_trt("10.8.0"), _req(graphs["fp32"], compute_capability="SM86",
                                                    local_compute_capability="SM90"))
    assert p.hardware_compatibility == "ampere+"
    assert ("config.hardware_compatibility_level=", "AMPERE_PLUS") in calls


def test_trt_cannot_target_an_older_generation(graphs):
    with pytest.raises(UserError, match="builds for the GPU it runs on"):
        _configure(fake_trt("10.8.0"), _req(graphs["fp32"], compute_capability="SM75", local_compute_capability="SM86"))


def test_rtx_sets_one_compute_capability_before_filling_it(graphs):
    p, calls = _configure(fake_trt("1.7.1", "trt-rtx"), _req(graphs["fp16"], "trt-rtx", "fp16", compute_capability="SM86"))
    sized = calls.index(("config.num_compute_capabilities=", 1))
    assert calls.index(("config.set_compute_capability", "SM86", 0)) > sized
    assert p.strongly_typed and _flags(calls) == [] and not p.use_timing_cache
    assert not any(c[0] == "config.create_timing_cache" for c in calls)


def test_rtx_refuses_a_compute_capability_it_lacks(graphs):
    with pytest.raises(UserError, match="cannot target SM90.*SM86"):
        _configure(fake_trt("1.7.1", "trt-rtx"), _req(graphs["fp32"], "trt-rtx", compute_capability="SM90"))


def test_rtx_without_a_target_is_a_user_error(graphs):
    with pytest.raises(UserError, match="target compute capability"):
        _configure(fake_trt("1.7.1", "trt-rtx"), _req(graphs["fp32"], "trt-rtx"))


def test_ort_default_qdq_is_refused_for_every_flavour_with_the_fix(graphs, tmp_path):
    ort_default = tiny_qdq_onnx(graphs["fp32"], tmp_path / "ort.onnx", tensorrt_ready=False)
    for trt, flavour in ((fake_trt("10.8.0"), "trt"), (fake_trt("1.7.1", "trt-rtx"), "trt-rtx")):
        with pytest.raises(UserError, match="INT32 input.*zero point.*quantize_bias=false"):
            _configure(trt, _req(ort_default, flavour, "int8", compute_capability="SM86"))


def test_worker_build_writes_engine_and_timing_cache(graphs, tmp_path, monkeypatch):
    trt = fake_trt("10.8.0")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    tc = tmp_path / "timing.cache"
    req = _req(graphs["fp32"], precision="fp16", timing_cache=str(tc))
    req.engine = str(tmp_path / "out.engine")
    p = plan(req, "10.8.0", _trt_graph.read(req.onnx))
    answer = _trt_build.build(req.to_json(), p.to_json())
    assert answer["ok"] and answer["size_bytes"] == len(b"fake-engine-bytes") and answer["trt_version"] == "10.8.0"
    assert Path(req.engine).read_bytes() == b"fake-engine-bytes"
    assert tc.read_bytes() == b"+new" and answer["timing_cache_bytes"] == 4
    assert [o["name"] for o in answer["outputs"]] == ["y"] and answer["inputs"][0]["dtype"] == "float"


H100 = {"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_mb": 81559.0, "compute_capability": "9.0", "driver": "580"}
A100 = {"index": 0, "name": "NVIDIA A100-SXM4-80GB", "memory_mb": 81920.0, "compute_capability": "8.0", "driver": "580"}


def _full_trt_here(monkeypatch, gpu):
    """Full TensorRT 10.8 (the recording fake) on `gpu`: NVML's answer and the builder are the
    hardware this machine lacks; the engine pass, its plan, metadata and cache are the real ones."""
    from xopt.runtime import trt_env

    monkeypatch.setitem(sys.modules, "tensorrt", fake_trt("10.8.0"))
    monkeypatch.setattr(trt_env, "require_flavour", lambda name: (trt_env.FLAVOURS[name], "10.8.0"))
    monkeypatch.setattr(trt_env, "gpus", lambda: [gpu])
    monkeypatch.setattr(_trt_build, "run", lambda request, plan_, timeout_s, workdir: _trt_build.build(request, plan_))


def test_full_trt_on_an_h100_for_the_3060_is_an_ampere_plus_engine_not_sm86(graphs, tmp_path, monkeypatch):
    from xopt.optimize.base import PassContext, get_pass
    from xopt.profiles import get_profile
    from xopt.runtime import engine_meta

    _full_trt_here(monkeypatch, H100)
    ctx = PassContext(model="tiny", profile=get_profile("rtx3060-laptop-12gb"), cache_dir=tmp_path / "cache",
                      engine_shapes=TINY_SHAPES)
    facts = get_pass("engine").apply(graphs["fp32"], tmp_path / "h100.engine", {"backend": "trt"}, ctx)
    assert facts["sm"] == "SM80+" and facts["sm"] != "SM86" and facts["hardware_compatibility"] == "ampere+"
    assert facts["compute_capabilities"] == ["9.0"] and facts["target_sm"] == "SM86"
    assert facts["built_on_gpu"] == "NVIDIA H100 80GB HBM3" and facts["built_on_sm"] == "SM90"
    assert "nvidia-h100-80gb-hbm3-SM90-for-SM86" in facts["timing_cache"]
    side = engine_meta.read(tmp_path / "h100.engine")
    assert engine_meta.mismatches(side, "10.8.0", "8.6") == []  # the 3060 runs it
    with pytest.raises(UserError, match=r"8\.0 and later \(AMPERE_PLUS, built on NVIDIA H100 80GB HBM3 SM90\) "
                                         r"but this GPU is 7\.5"):
        engine_meta.check_loadable(tmp_path / "h100.engine", side, "10.8.0", "7.5")
    again = get_pass("engine").apply(graphs["fp32"], tmp_path / "again.engine", {"backend": "trt"}, ctx)
    assert again["cache_hit"]
    _full_trt_here(monkeypatch, A100)  # another building GPU: another engine, not the H100's from the cache
    other = get_pass("engine").apply(graphs["fp32"], tmp_path / "a100.engine", {"backend": "trt"}, ctx)
    assert not other["cache_hit"] and other["key"] != facts["key"] and other["built_on_gpu"] == A100["name"]


def test_full_trt_for_its_own_gpu_is_labelled_with_that_gpu(graphs, tmp_path, monkeypatch):
    from xopt.optimize.base import PassContext, get_pass
    from xopt.profiles import get_profile

    _full_trt_here(monkeypatch, H100)
    ctx = PassContext(model="tiny", profile=get_profile("rtx3060-laptop-12gb"), cache_dir=tmp_path / "cache",
                      engine_shapes=TINY_SHAPES)
    facts = get_pass("engine").apply(graphs["fp32"], tmp_path / "e.engine", {"backend": "trt", "compute_capability": "9.0"},
                                     ctx)
    assert facts["sm"] == "SM90" and facts["hardware_compatibility"] == "none" and facts["target_sm"] == "SM90"
