"""Real TensorRT-RTX engine builds on this (GPU-less) machine: SM86 ahead of time, the engine
cache, metadata checks, a crashing build worker, and the manifest record."""
from __future__ import annotations

import json
import shutil
import signal
import sys

import pytest

from xopt.errors import OutputExistsError, UserError
from xopt.hashing import sha256_file
from xopt.manifest import Manifest, from_json
from xopt.optimize import _trt_build
from xopt.optimize.base import PassContext, get_pass
from xopt.optimize.engine import attach_engine, build_engine_variant, default_workspace_mb
from xopt.profiles import get_profile
from xopt.runtime import engine_meta, load, trt_env
from xopt.testing import TINY_SHAPES, tiny_conv_onnx, tiny_qdq_onnx

trt = pytest.mark.trt
PROFILE = get_profile("rtx3060-laptop-12gb")


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    d = tmp_path_factory.mktemp("graphs")
    fp32 = tiny_conv_onnx(d / "fp32.onnx")
    return {"fp32": fp32, "fp16": tiny_conv_onnx(d / "fp16.onnx", fp16=True), "int8": tiny_qdq_onnx(fp32, d / "int8.onnx")}


def _ctx(tmp_path, shapes=TINY_SHAPES, profile=PROFILE):
    return PassContext(model="tiny", profile=profile, cache_dir=tmp_path / "cache", engine_shapes=shapes)


def _build(src, dst, ctx, **opts):
    return get_pass("engine").apply(src, dst, {"backend": "trt-rtx", **opts}, ctx)


def test_workspace_is_capped_from_the_profile_budget():
    assert default_workspace_mb(PROFILE) == int(PROFILE.budget_mb * 0.25)
    assert default_workspace_mb(get_profile("cpu")) == 1024  # a CPU profile has no VRAM budget
    assert default_workspace_mb(None) == 1024


def test_trt_backend_without_tensorrt_names_the_extra(graphs, tmp_path):
    if shutil.which("nvidia-smi") or __import__("importlib").util.find_spec("tensorrt"):
        pytest.skip("tensorrt or a GPU is present here")
    with pytest.raises(UserError, match=r'xopt\[trt\]'):
        get_pass("engine").apply(graphs["fp32"], tmp_path / "e.engine", {"backend": "trt"}, _ctx(tmp_path))


@trt
def test_rtx_builds_an_sm86_engine_without_a_gpu(graphs, tmp_path):
    dst = tmp_path / "out" / "tiny.engine"
    facts = _build(graphs["fp32"], dst, _ctx(tmp_path))
    assert dst.stat().st_size == facts["size_bytes"] > 10_000
    assert sha256_file(dst) == facts["engine_sha256"]
    assert facts["sm"] == "SM86" and facts["compute_capabilities"] == ["8.6"] and facts["flavour"] == "trt-rtx"
    assert facts["precision"] == "fp32" and facts["strongly_typed"] and facts["cache_hit"] is False
    assert facts["build_ms"] > 0 and facts["workspace_mb"] == default_workspace_mb(PROFILE)
    assert facts["shapes"]["x"] == {"min": [1, 3, 16, 16], "opt": [1, 3, 32, 32], "max": [2, 3, 64, 64]}
    assert facts["trt_version"].startswith("1.") and facts["timing_cache"] is None
    side = engine_meta.read(dst)
    assert side["engine_sha256"] == facts["engine_sha256"] and "--engine trt-rtx" in side["rebuild"]


@trt
def test_second_build_is_a_cache_hit_and_other_shapes_miss(graphs, tmp_path):
    first = _build(graphs["fp32"], tmp_path / "a.engine", _ctx(tmp_path))
    second = _build(graphs["fp32"], tmp_path / "b.engine", _ctx(tmp_path))
    assert second["cache_hit"] and second["build_ms"] == 0.0 and second["cached_build_ms"] == first["build_ms"]
    assert second["key"] == first["key"] and sha256_file(tmp_path / "b.engine") == first["engine_sha256"]
    wider = {"x": ((1, 3, 16, 16), (1, 3, 32, 32), (4, 3, 64, 64))}
    third = _build(graphs["fp32"], tmp_path / "c.engine", _ctx(tmp_path, shapes=wider))
    assert not third["cache_hit"] and third["key"] != first["key"]
    index = json.loads((tmp_path / "cache" / "engines" / "index.json").read_text())
    assert set(index) == {first["key"], third["key"]} and index[first["key"]]["last_hit"]


@trt
def test_damaged_cache_entry_is_rebuilt(graphs, tmp_path):
    first = _build(graphs["fp32"], tmp_path / "a.engine", _ctx(tmp_path))
    cached = tmp_path / "cache" / "engines" / f"{first['key']}.engine"
    cached.write_bytes(cached.read_bytes()[:1000])
    again = _build(graphs["fp32"], tmp_path / "b.engine", _ctx(tmp_path))
    assert not again["cache_hit"] and sha256_file(cached) == again["engine_sha256"]


@trt
def test_fp16_and_int8_engines_take_the_graph_precision(graphs, tmp_path):
    fp16 = _build(graphs["fp16"], tmp_path / "fp16.engine", _ctx(tmp_path))
    int8 = _build(graphs["int8"], tmp_path / "int8.engine", _ctx(tmp_path))
    assert (fp16["precision"], int8["precision"]) == ("fp16", "int8")
    with pytest.raises(UserError, match="strongly typed"):
        _build(graphs["fp32"], tmp_path / "x.engine", _ctx(tmp_path), precision="fp16")


@trt
def test_ort_default_int8_is_refused_before_building(graphs, tmp_path):
    bad = tiny_qdq_onnx(graphs["fp32"], tmp_path / "ort.onnx", tensorrt_ready=False)
    with pytest.raises(UserError, match="quantize_bias=false"):
        _build(bad, tmp_path / "bad.engine", _ctx(tmp_path))


@trt
def test_missing_or_bad_shapes_are_user_errors(graphs, tmp_path):
    with pytest.raises(UserError, match="dynamic axes"):
        _build(graphs["fp32"], tmp_path / "a.engine", _ctx(tmp_path, shapes=None))
    with pytest.raises(UserError, match="static axis 1"):
        _build(graphs["fp32"], tmp_path / "a.engine", _ctx(tmp_path, shapes={"x": ((1, 4, 8, 8),) * 3}))
    facts = _build(graphs["fp32"], tmp_path / "a.engine", _ctx(tmp_path, shapes=None),
                   shapes="x:1x3x8x8,1x3x16x16,1x3x32x32")
    assert facts["shapes"]["x"]["max"] == [1, 3, 32, 32]


@trt
def test_rtx_rejects_a_compute_capability_it_cannot_target(graphs, tmp_path):
    with pytest.raises(UserError, match="cannot target SM90"):
        _build(graphs["fp32"], tmp_path / "a.engine", _ctx(tmp_path), compute_capability="9.0")


@trt
def test_a_crashing_build_worker_becomes_a_user_error(graphs, tmp_path, monkeypatch):
    crash = [sys.executable, "-c", f"import os, signal; print('[E] boom'); os.kill(os.getpid(), {int(signal.SIGSEGV)})"]
    monkeypatch.setattr(_trt_build, "_command", lambda job: crash)
    with pytest.raises(UserError, match="killed by SIGSEGV.*boom"):
        _build(graphs["fp32"], tmp_path / "a.engine", _ctx(tmp_path))
    assert not list((tmp_path / "cache" / "engines").glob("*.engine"))
    assert not list((tmp_path / "cache" / "engines").glob("*.partial"))


@trt
def test_mismatched_engine_metadata_is_a_user_error_offering_a_rebuild(graphs, tmp_path):
    dst = tmp_path / "tiny.engine"
    _build(graphs["fp32"], dst, _ctx(tmp_path))
    meta = engine_meta.read(dst)
    assert engine_meta.mismatches(meta, meta["trt_version"], "8.6") == []
    with pytest.raises(UserError, match=r"built with trt-rtx 1\..* but 9\.9\.9 is installed; rebuild it with: xopt export"):
        engine_meta.check_loadable(dst, meta, "9.9.9", "8.6")
    with pytest.raises(UserError, match="built for compute capability 8.6 but this GPU is 8.9"):
        engine_meta.check_loadable(dst, meta, meta["trt_version"], "8.9")
    with pytest.raises(UserError, match="not installed"):
        engine_meta.check_loadable(dst, meta, None, None)
    dst.write_bytes(dst.read_bytes() + b"x")
    with pytest.raises(UserError, match="sha256 differs"):
        engine_meta.check_file(dst, meta)
    engine_meta.sidecar_path(dst).unlink()
    with pytest.raises(UserError, match="no metadata file"):
        engine_meta.read(dst)


def test_version_compatible_trt_engines_load_forward_within_a_major():
    meta = {"flavour": "trt", "trt_version": "10.3.0", "compute_capabilities": ["8.6"], "version_compatible": True,
            "hardware_compatibility": "ampere+"}
    assert engine_meta.mismatches(meta, "10.8.0", "9.0") == []
    assert engine_meta.mismatches(meta, "10.1.0", "8.6")  # older runtime
    assert engine_meta.mismatches(meta, "11.0.0", "8.6")  # other major
    assert engine_meta.mismatches(meta, "10.3.0", "7.5")  # pre-Ampere GPU


@trt
def test_build_engine_variant_records_the_engine_in_the_manifest(graphs, tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    shutil.copy(graphs["fp16"], out / "tiny.fp16.onnx")
    entry = {"name": "fp16", "precision": "fp16", "path": "tiny.fp16.onnx", "sha256": "0", "opset": 17,
             "inputs": {"x": [-1, 3, -1, -1]}, "outputs": {"y": [-1, 1, -1, -1]}, "parity": {}}
    manifest = Manifest(model="tiny", weights={"kind": "seeded-random"}, variants=[entry], directory=out)
    record = build_engine_variant(manifest, "fp16", "trt-rtx", profile="rtx3060-laptop-12gb",
                                  cache_dir=tmp_path / "cache", shapes=TINY_SHAPES)
    assert record["path"] == "tiny.fp16.trt-rtx.engine" and (out / record["path"]).exists()
    assert record["sm"] == "SM86" and record["precision"] == "fp16" and not record["cache_hit"]
    attach_engine(manifest, "fp16", record)
    manifest.save(out)
    reloaded = from_json(json.loads((out / "manifest.json").read_text()), out / "manifest.json")
    assert reloaded.variant("fp16")["engines"][-1]["engine"]["compute_capabilities"] == ["8.6"]
    if not trt_env.gpus():  # the runtime finds the engine through the manifest and refuses cleanly
        with pytest.raises(UserError, match="needs an NVIDIA GPU"):
            load(out, backend="trt", variant="fp16")
    with pytest.raises(OutputExistsError):
        build_engine_variant(manifest, "fp16", "trt-rtx", cache_dir=tmp_path / "cache", shapes=TINY_SHAPES)
    again = build_engine_variant(manifest, "fp16", "trt-rtx", force=True, cache_dir=tmp_path / "cache",
                                 shapes=TINY_SHAPES)
    assert again["cache_hit"] and again["sha256"] == record["sha256"]
    assert "--engine trt-rtx --fp16 --profile rtx3060-laptop-12gb --force" in engine_meta.read(out / record["path"])["rebuild"]


@trt
def test_modnet_fp16_sm86_engine_builds_here(tmp_path):
    """The MODNet architecture (seeded init) -> ONNX -> FP16 (Resize kept FP32) -> SM86 engine: ~10 s."""
    net = pytest.importorskip("xopt.models.modnet.net")
    import numpy as np
    import torch

    from xopt.export.onnx_export import to_onnx

    torch.manual_seed(0)
    axes = {0: "batch", 2: "height", 3: "width"}
    to_onnx(net.MODNet().eval(), {"input": np.zeros((1, 3, 256, 256), np.float32)}, tmp_path / "modnet.onnx",
            ["input"], ["matte"], {"input": axes, "matte": axes}, opset=17)
    fp16 = get_pass("fp16")
    fp16.apply(tmp_path / "modnet.onnx", tmp_path / "modnet.fp16.onnx", fp16.options.resolve({"op_block_list": ["Resize"]}),
               PassContext(model="modnet"))
    shapes = {"input": ((1, 3, 256, 256), (1, 3, 512, 512), (1, 3, 1088, 1920))}
    facts = _build(tmp_path / "modnet.fp16.onnx", tmp_path / "modnet.fp16.engine", _ctx(tmp_path, shapes=shapes))
    assert facts["precision"] == "fp16" and facts["sm"] == "SM86" and facts["size_bytes"] > 5_000_000
    assert facts["shapes"]["input"]["max"] == [1, 3, 1088, 1920]
    again = _build(tmp_path / "modnet.fp16.onnx", tmp_path / "again.engine", _ctx(tmp_path, shapes=shapes))
    assert again["cache_hit"] and again["engine_sha256"] == facts["engine_sha256"]
    print(json.dumps({k: facts[k] for k in ("build_ms", "size_bytes", "workspace_mb")}))


@trt
@pytest.mark.slow
def test_modnet_fp16_engine_through_the_export_pipeline(tmp_path):
    """MODNet FP16 through the real export pipeline, then an SM86 engine (minutes on 2 CPU cores)."""
    from xopt.registry import get_model

    try:
        spec = get_model("modnet")
    except UserError:
        pytest.skip("modnet is not registered in this checkout")
    from xopt.export.pipeline import export_model
    from xopt.manifest import load

    export_model("modnet", ["fp16"], tmp_path / "modnet", force=True)
    manifest = load(tmp_path / "modnet")
    name = spec.input_names[0]
    shapes = {name: ((1, 3, 256, 256), (1, 3, 512, 512), (1, 3, 1088, 1920))}
    record = build_engine_variant(manifest, "fp16", "trt-rtx", profile=PROFILE, cache_dir=tmp_path / "cache",
                                  shapes=shapes)
    assert record["sm"] == "SM86" and record["engine"]["size_bytes"] > 1_000_000
    print(json.dumps({k: record["engine"][k] for k in ("build_ms", "size_bytes")}))
