"""Backend `trt`: says why it cannot run here, refuses to load without touching TensorRT, and
(on a GPU machine) runs an engine and matches ONNX Runtime."""
from __future__ import annotations

import numpy as np
import pytest

from xopt.errors import UserError
from xopt.optimize.base import PassContext, get_pass
from xopt.profiles import get_profile
from xopt.runtime import trt_env
from xopt.runtime.backends import trt as trt_backend
from xopt.runtime.backends.base import get_backend
from xopt.testing import TINY_SHAPES, tiny_conv_onnx, tiny_feeds

no_gpu = pytest.mark.skipif(bool(trt_env.gpus()), reason="a GPU is present: the no-GPU answers do not apply")


def _engine(d, flavour: str, cc: str):
    onnx_path = tiny_conv_onnx(d / "tiny.onnx")
    ctx = PassContext(model="tiny", profile=get_profile("rtx3060-laptop-12gb"), cache_dir=d / "cache",
                      engine_shapes=TINY_SHAPES)
    get_pass("engine").apply(onnx_path, d / "tiny.engine", {"backend": flavour, "compute_capability": cc}, ctx)
    return d / "tiny.engine", onnx_path


@pytest.fixture(scope="module")
def rtx_engine(tmp_path_factory):
    pytest.importorskip("tensorrt_rtx")
    return _engine(tmp_path_factory.mktemp("engine"), "trt-rtx", "8.6")


@pytest.fixture(scope="module")
def gpu_engine(tmp_path_factory):
    """An engine for the GPU here: full TensorRT if installed, else TensorRT-RTX if it targets this GPU."""
    gpu = trt_env.first_gpu()
    if gpu is None:
        pytest.skip("no GPU")
    flavour = "trt" if trt_env.FLAVOURS["trt"].installed_version() else "trt-rtx"
    try:
        return _engine(tmp_path_factory.mktemp("gpu-engine"), flavour, gpu["compute_capability"])
    except UserError as exc:
        pytest.skip(f"no engine for this GPU: {exc}")


def test_backend_is_registered_for_engines():
    b = get_backend("trt")
    assert b.artifact == "engine" and b.probe is trt_backend.probe


@no_gpu
def test_probe_reports_no_driver_here():
    if not any(f.installed_version() for f in trt_env.FLAVOURS.values()):
        pytest.skip("no TensorRT flavour installed: the not-installed answer applies (tested below)")
    assert trt_backend.probe() == (False, "no NVIDIA driver (NVML)")


def test_probe_reports_a_missing_tensorrt(monkeypatch):
    absent = {k: trt_env.Flavour(f.name, f"xopt_no_such_module_{k.replace('-', '_')}", f.dists, f.extra, f.cross_compiles)
              for k, f in trt_env.FLAVOURS.items()}
    monkeypatch.setattr(trt_env, "FLAVOURS", absent)
    ok, why = trt_backend.probe()
    assert not ok and why.startswith("tensorrt not installed: pip install") and "xopt[trt]" in why


@no_gpu
@pytest.mark.trt
def test_loading_an_engine_without_a_gpu_is_a_user_error_not_a_crash(rtx_engine):
    engine, _ = rtx_engine
    with pytest.raises(UserError, match="needs an NVIDIA GPU with a driver, and NVML found none"):
        get_backend("trt").session(engine)


def test_loading_an_engine_without_metadata_offers_a_rebuild(tmp_path):
    fake = tmp_path / "x.engine"
    fake.write_bytes(b"not an engine")
    with pytest.raises(UserError, match="no metadata file.*rebuild it with: xopt export"):
        get_backend("trt").session(fake)


def test_feed_shapes_outside_the_profile_are_user_errors():
    meta = {"shapes": {"x": {"min": [1, 3, 16, 16], "opt": [1, 3, 32, 32], "max": [2, 3, 64, 64]}},
            "rebuild": "xopt export tiny --engine trt-rtx --force"}
    trt_backend.check_shapes(meta, {"x": np.zeros((2, 3, 64, 16), np.float32)})
    with pytest.raises(UserError, match=r"outside the engine's profile.*rebuild with wider shapes: xopt export tiny"):
        trt_backend.check_shapes(meta, {"x": np.zeros((1, 3, 128, 128), np.float32)})
    with pytest.raises(UserError, match="outside"):
        trt_backend.check_shapes(meta, {"x": np.zeros((3, 64, 64), np.float32)})


@pytest.mark.trt
def test_runtime_probe_runs_in_a_child_process():
    pytest.importorskip("tensorrt_rtx")
    trt_env.probe_runtime.cache_clear()
    ok, why = trt_env.probe_runtime("trt-rtx")
    assert isinstance(ok, bool) and (ok or why)


@pytest.mark.gpu
@pytest.mark.trt
def test_engine_runs_on_the_gpu_and_matches_onnxruntime(gpu_engine):
    ort = pytest.importorskip("onnxruntime")
    engine, onnx_path = gpu_engine
    ok, why = trt_backend.probe()
    if not ok:
        pytest.skip(f"trt backend unusable here: {why}")
    ref = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    with get_backend("trt").session(engine) as sess:
        for feed in tiny_feeds(3):
            out = sess.run(feed)
            np.testing.assert_allclose(out["y"], ref.run(None, feed)[0], atol=2e-3)
        t = sess.timings
        assert t.deserialize_ms > 0 and t.context_ms >= 0 and t.load_ms >= t.deserialize_ms
        assert len(t.device_ms) == len(t.run_ms) == 2 and all(d > 0 for d in t.device_ms)
