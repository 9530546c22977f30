"""Model files the user hands xopt, damaged or foreign: ONNX artifacts, TensorRT engines,
checkpoints. Each is refused with one line naming the problem and the fix, exit code 1, and
nothing written or changed."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from xopt.errors import UserError
from xopt.hashing import sha256_file

from ._support import TOY, assert_user_error, cli, cli_process, debris, snapshot

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture
def photo(tmp_path):
    from PIL import Image

    from xopt.models.modnet.pipeline import sample_images

    path = tmp_path / "in" / "photo.png"
    path.parent.mkdir()
    Image.fromarray(sample_images(1)[0][::8, ::8]).save(path)  # 64x64
    return path


def _patch_manifest(art, **entry):
    m = json.loads((art / "manifest.json").read_text())
    m["variants"][0].update(entry)
    (art / "manifest.json").write_text(json.dumps(m))


# ---------------------------------------------------------------- ONNX artifacts in an export

@pytest.mark.parametrize("damage", ["truncated", "empty", "bytes flipped"])
def test_damaged_artifact_is_refused_by_run_profile_and_load(damage, modnet_copy, photo, tmp_path):
    from xopt.runtime import load

    art = modnet_copy / "modnet_fp32.onnx"
    data = art.read_bytes()
    art.write_bytes({"truncated": data[: len(data) // 2], "empty": b"",
                     "bytes flipped": data[:1000] + bytes(b ^ 0xFF for b in data[1000:1100]) + data[1100:]}[damage])
    before = snapshot(modnet_copy)
    needle = "is empty" if damage == "empty" else "changed since it was exported"

    r = cli("run", "modnet", photo, "-o", tmp_path / "out" / "matte.png", "--artifacts", modnet_copy)
    assert_user_error(r, needle, "xopt export", "--force")
    r = cli("profile", "modnet", "--variants", "fp32", "--artifacts", modnet_copy, "--out", tmp_path / "rep",
            "--frames", "1", "--no-e2e")
    assert_user_error(r, needle)
    with pytest.raises(UserError, match=needle):
        load(modnet_copy)

    assert snapshot(modnet_copy) == before  # the damaged file is reported, not "repaired" or deleted
    assert not (tmp_path / "out").exists() and not (tmp_path / "rep").exists()


@pytest.mark.parametrize("content", [b"", b"\x08\x07garbage" * 50, "half"])
def test_corrupt_bare_onnx_is_a_load_error(content, toy_export, tmp_path):
    from xopt.runtime import load

    path = tmp_path / "model.onnx"
    if content == "half":
        data = (toy_export / "toy_fp32.onnx").read_bytes()
        content = data[: len(data) // 2]
    path.write_bytes(content)
    with pytest.raises(UserError, match="ONNX Runtime cannot load .*model.onnx.*re-export it") as e:
        load(path)
    assert "\n" not in str(e.value)
    assert path.read_bytes() == content


def test_swapped_graph_with_other_inputs_is_refused(modnet_copy, photo, tmp_path):
    """Another graph in the artifact's place, its hash even written into the manifest."""
    from xopt.runtime import load
    from xopt.testing import tiny_conv_onnx

    art = modnet_copy / "modnet_fp32.onnx"
    tiny_conv_onnx(art)
    _patch_manifest(modnet_copy, sha256=sha256_file(art))
    before = snapshot(modnet_copy)
    for r in (cli("run", "modnet", photo, "-o", tmp_path / "matte.png", "--artifacts", modnet_copy),
              cli("profile", "modnet", "--variants", "fp32", "--artifacts", modnet_copy, "--out", tmp_path / "rep",
                  "--frames", "1", "--no-e2e")):
        assert_user_error(r, "takes inputs ['x'], the manifest says ['input']", "re-export")
    with pytest.raises(UserError, match="takes inputs"):
        load(modnet_copy)
    assert snapshot(modnet_copy) == before
    assert not (tmp_path / "matte.png").exists() and not (tmp_path / "rep").exists()


def _graph(path, name: str, shape: list):
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Sigmoid", [name], ["output"])], "g",
                          [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


@pytest.mark.parametrize("name, shape", [("x", ["N", 3, "H", "W"]), ("input", ["N", 1, "H", "W"]),
                                         ("input", ["N", "H", "W"])])
def test_bare_onnx_with_other_inputs_fed_to_the_pipeline(name, shape, tmp_path):
    from xopt.runtime import load
    from xopt.models.modnet.pipeline import MattingPipeline

    with load(_graph(tmp_path / "other.onnx", name, shape)) as session:
        with pytest.raises(UserError, match=r"other.onnx is not a MODNet graph: it takes .*; pass a MODNet export"):
            MattingPipeline(session, {})


def test_feeds_that_do_not_fit_a_raw_session_are_user_errors(toy_export):
    from xopt.runtime import load

    with load(toy_export) as session:
        with pytest.raises(UserError, match=r"the inputs do not fit .*toy_fp32.onnx.*feed what the graph expects"):
            session.run({"input": np.zeros((3, 16, 16), np.float32)})  # rank 3 for a rank-4 graph
        with pytest.raises(UserError, match="missing input"):
            session.run({"image": np.zeros((1, 3, 16, 16), np.float32)})


def test_run_with_a_model_file_instead_of_the_export_directory(modnet_export, photo, tmp_path):
    r = cli("run", "modnet", photo, "-o", tmp_path / "m.png", "--artifacts", modnet_export / "modnet_fp32.onnx")
    assert_user_error(r, "modnet_fp32.onnx is a file, and a pipeline needs the export directory",
                      "pass the directory xopt export wrote")
    assert not (tmp_path / "m.png").exists()


# ---------------------------------------------------------------- TensorRT engines

def _engine_export(toy_copy, **meta):
    """The toy export with an engine recorded for fp32, and its metadata sidecar as `meta` says."""
    from xopt.runtime import engine_meta

    engine = toy_copy / "toy_fp32.engine"
    engine.write_bytes(b"serialized engine (never deserialised: refused before)")
    full = {"model": "toy", "module": "tensorrt_rtx", "flavour": "trt-rtx", "trt_version": "1.0.0.0",
            "compute_capabilities": ["8.6"], "sm": "SM86", "precision": "fp32",
            "shapes": {"input": {"min": [1, 3, 16, 16], "opt": [1, 3, 32, 32], "max": [1, 3, 64, 64]}},
            "engine_sha256": sha256_file(engine), "rebuild": "xopt export toy --engine trt-rtx --force"}
    engine_meta.write(engine, {**full, **meta}, force=True)
    _patch_manifest(toy_copy, engines=[{"path": engine.name, "backend": "trt-rtx"}])
    return engine


def test_engine_from_another_tensorrt_version_is_refused(toy_copy, tmp_path):
    from xopt.runtime import load

    _engine_export(toy_copy)
    before = snapshot(toy_copy)
    with pytest.raises(UserError, match=r"engine toy_fp32.engine cannot be loaded here: it (was built with trt-rtx "
                                        r"1.0.0.0 but .* is installed|needs tensorrt_rtx 1.0.0.0, which is not "
                                        r"installed); rebuild it with: xopt export toy --engine trt-rtx --force"):
        load(toy_copy, backend="trt")
    r = cli_process("profile", "toy", "--backend", "trt", "--variants", "fp32", "--artifacts", toy_copy,
                    "--out", tmp_path / "rep", "--frames", "1", "--no-e2e", setup=TOY)
    assert_user_error(r, "cannot be loaded here", "rebuild it with")
    assert snapshot(toy_copy) == before and not (tmp_path / "rep").exists()


def test_replaced_engine_and_doctored_metadata_are_refused(toy_copy):
    from xopt.runtime import load

    engine = _engine_export(toy_copy)
    engine.write_bytes(b"another engine")
    with pytest.raises(UserError, match="does not match its metadata .*sha256.*rebuild it with"):
        load(toy_copy, backend="trt")
    side = engine.with_name(engine.name + ".json")
    side.write_text("{ not json")
    with pytest.raises(UserError, match="engine metadata .* is unreadable"):
        load(toy_copy, backend="trt")
    side.write_text(json.dumps({"format": "xopt-engine", "schema_version": 1, "flavour": "trt-rtx"}))
    with pytest.raises(UserError, match="lacks trt_version"):
        load(toy_copy, backend="trt")


def test_engine_for_another_gpu_is_named():
    """The compute-capability half of the check needs a GPU to reach through `load`; the rule itself:"""
    from xopt.runtime import engine_meta

    meta = {"flavour": "trt-rtx", "trt_version": "1.7", "compute_capabilities": ["8.6"],
            "rebuild": "xopt export modnet --engine trt-rtx --force"}
    with pytest.raises(UserError, match="built for compute capability 8.6 but this GPU is 8.9; rebuild it with"):
        engine_meta.check_loadable("m.engine", meta, "1.7", "8.9")
    engine_meta.check_loadable("m.engine", {**meta, "hardware_compatibility": "ampere+"}, "1.7", "8.9")


# ---------------------------------------------------------------- checkpoints

class NotATensor:
    """Pickled into a checkpoint, it needs code execution to load."""

    def __reduce__(self):
        return (print, ("this would run at load time",))


def _modnet_state():
    torch = pytest.importorskip("torch")
    from xopt.models.modnet.net import MODNet

    torch.manual_seed(0)
    return MODNet().state_dict()


def _checkpoint(kind, path):
    torch = pytest.importorskip("torch")
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "keys":
        state = _modnet_state()
        for k in ("hr_branch.conv_hr4x.0.layers.0.weight", "f_branch.conv_f.1.layers.0.bias"):
            del state[k]
        state["decoder.extra.weight"] = torch.zeros(2)
        torch.save(state, path)
    elif kind == "pickle code":
        torch.save({"backbone.model.features.0.0.weight": torch.zeros(1), "hook": NotATensor()}, path)
    elif kind == "legacy format":  # torch.save's pre-1.6 format, a class inside
        torch.save({"state_dict": NotATensor}, path, _use_new_zipfile_serialization=False)
    elif kind == "plain pickle":  # pickle protocol 4: torch's weights-only reader stops at its framing
        with open(path, "wb") as fh:
            pickle.dump({"state_dict": NotATensor()}, fh, protocol=4)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "directory":
        path.mkdir()
    elif kind == "garbage":
        path.write_bytes(b"PK\x03\x04 not really a zip" * 10)
    return path


CHECKPOINTS = {
    "keys": ("does not match MODNet's parameter layout: missing keys (2): f_branch.conv_f.1.layers.0.bias, "
             "hr_branch.conv_hr4x.0.layers.0.weight; unexpected keys (1): decoder.extra.weight",
             "pass the official modnet_photographic_portrait_matting.ckpt"),
    "pickle code": ("was refused: it needs arbitrary code", "weights_only=True", "re-save it as a plain state_dict"),
    "legacy format": ("was refused: it needs arbitrary code",),
    "plain pickle": ("is not a readable PyTorch checkpoint", "pass a file saved with torch.save"),
    "empty": ("is empty", "save it again"),
    "directory": ("is a directory", "pass the .ckpt file itself"),
    "garbage": ("is not a readable PyTorch checkpoint", "pass a file saved with torch.save"),
}


@pytest.mark.parametrize("kind", list(CHECKPOINTS))
def test_bad_checkpoint_through_the_cli_writes_nothing(kind, tmp_path):
    ckpt = _checkpoint(kind, tmp_path / "user" / "modnet.ckpt")
    users = snapshot(tmp_path / "user")
    r = cli_process("export", "modnet", "--checkpoint", ckpt, "--out", tmp_path / "new" / "art", cwd=tmp_path)
    assert_user_error(r, *CHECKPOINTS[kind])
    assert "this would run at load time" not in r.out + r.err
    assert not (tmp_path / "new").exists()  # not even the directory or its lock file
    assert snapshot(tmp_path / "user") == users


def test_bad_checkpoint_leaves_an_existing_out_directory_as_it_was(tmp_path):
    ckpt = _checkpoint("empty", tmp_path / "user" / "modnet.ckpt")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("the user's own file")
    before = snapshot(out)
    r = cli("export", "modnet", "--checkpoint", ckpt, "--out", out)
    assert_user_error(r, "is empty")
    assert snapshot(out) == before and not debris(out)
