"""MODNet torch side: the official parameter layout, checkpoint loading, seeded weights, spec."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from xopt.errors import UserError  # noqa: E402
from xopt.models.modnet.net import MODNet  # noqa: E402
from xopt.models.modnet.weights import load_checkpoint, seeded  # noqa: E402
from xopt.hashing import sha256_file  # noqa: E402
from xopt.models.modnet.pipeline import calibration_feeds  # noqa: E402

# Names and shapes read off the official repository's modules (src/models/modnet.py,
# src/models/backbones/mobilenetv2.py) for the released hr_channels=32 model.
OFFICIAL_SHAPES = {
    "backbone.model.features.0.0.weight": (32, 3, 3, 3),
    "backbone.model.features.0.1.running_var": (32,),
    "backbone.model.features.1.conv.0.weight": (32, 1, 3, 3),  # expansion 1: depthwise first
    "backbone.model.features.1.conv.3.weight": (16, 32, 1, 1),
    "backbone.model.features.2.conv.0.weight": (96, 16, 1, 1),
    "backbone.model.features.2.conv.3.weight": (96, 1, 3, 3),
    "backbone.model.features.2.conv.7.bias": (24,),
    "backbone.model.features.17.conv.6.weight": (320, 960, 1, 1),
    "backbone.model.features.18.0.weight": (1280, 320, 1, 1),
    "lr_branch.backbone.model.features.18.1.bias": (1280,),
    "lr_branch.se_block.fc.0.weight": (320, 1280),
    "lr_branch.se_block.fc.2.weight": (1280, 320),
    "lr_branch.conv_lr16x.layers.0.weight": (96, 1280, 5, 5),
    "lr_branch.conv_lr16x.layers.1.bnorm.weight": (48,),
    "lr_branch.conv_lr8x.layers.0.weight": (32, 96, 5, 5),
    "lr_branch.conv_lr.layers.0.weight": (1, 32, 3, 3),
    "hr_branch.tohr_enc2x.layers.0.weight": (32, 16, 1, 1),
    "hr_branch.conv_enc2x.layers.0.weight": (32, 35, 3, 3),
    "hr_branch.conv_hr4x.0.layers.0.weight": (64, 99, 3, 3),
    "hr_branch.conv_hr2x.3.layers.1.bnorm.running_mean": (16,),
    "hr_branch.conv_hr.1.layers.0.weight": (1, 32, 1, 1),
    "f_branch.conv_lr4x.layers.0.weight": (32, 32, 5, 5),
    "f_branch.conv_f.0.layers.0.weight": (16, 35, 3, 3),
    "f_branch.conv_f.1.layers.0.bias": (1,),
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These graphs are tiny: a second intra-op thread buys nothing and, on a shared CI
    machine, oversubscription made each forward pass ten times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return MODNet().eval()


def _x(h=64, w=96, batch=1, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).uniform(-1, 1, (batch, 3, h, w)).astype(np.float32))


def test_state_dict_has_the_official_layout(net):
    sd = net.state_dict()
    backbone = [k for k in sd if k.startswith("backbone.")]
    alias = [k for k in sd if k.startswith("lr_branch.backbone.")]
    # 312 backbone tensors (19 stages), stored twice because the LR branch holds the same module.
    assert len(backbone) == len(alias) == 312
    assert {k[len("lr_branch."):] for k in alias} == set(backbone)
    assert len(sd) == 751
    for key, shape in OFFICIAL_SHAPES.items():
        assert tuple(sd[key].shape) == shape, key
    assert not any(k.startswith("lr_branch.se_block.fc.") and k.endswith(".bias") for k in sd)
    assert not any("inorm" in k or "classifier" in k for k in sd)  # affine-free InstanceNorm, no classifier
    # The MobileNetV2 feature extractor has the same conv/BN structure as the standard one.
    assert sum(p.numel() for p in net.backbone.model.parameters()) == 2_223_872
    assert net.lr_branch.backbone is net.backbone


def test_forward_returns_the_matte_at_input_size(net):
    with torch.no_grad():
        out = net(_x(64, 96, batch=2))
    assert out.shape == (2, 1, 64, 96)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def _perturbed(seed):
    """A module whose every tensor differs from a fresh MODNet (BN statistics included)."""
    torch.manual_seed(seed)
    m = MODNet()
    with torch.no_grad():
        for k, v in m.state_dict().items():
            if v.is_floating_point():
                v.add_(torch.rand_like(v) * 0.1)
    return m.eval()


def test_dataparallel_checkpoint_round_trip(tmp_path):
    src = _perturbed(1)
    path = tmp_path / "modnet_photographic_portrait_matting.ckpt"
    torch.save(torch.nn.DataParallel(src).state_dict(), path)
    saved = torch.load(path, weights_only=True)
    assert all(k.startswith("module.") for k in saved)
    assert "module.lr_branch.backbone.model.features.0.0.weight" in saved

    dst = _perturbed(2)
    weights = load_checkpoint(dst, path)
    assert weights.kind == "checkpoint" and weights.sha256 == sha256_file(path)
    x = _x(64, 64)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))


def test_nested_state_dict_without_heads_or_alias_loads(tmp_path):
    src = _perturbed(3)
    sd = {k: v for k, v in src.state_dict().items()
          if not k.startswith(("lr_branch.backbone.", "lr_branch.conv_lr.", "hr_branch.conv_hr."))}
    path = tmp_path / "nested.pth"
    torch.save({"state_dict": sd, "epoch": 7}, path)
    dst = _perturbed(4)
    load_checkpoint(dst, path)
    x = _x(32, 64)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))


def test_wrong_keys_are_listed(tmp_path):
    sd = dict(_perturbed(5).state_dict())
    del sd["f_branch.conv_f2x.layers.0.weight"]
    sd["f_branch.extra.weight"] = torch.zeros(3)
    sd["hr_branch.tohr_enc2x.layers.0.bias"] = torch.zeros(7)
    path = tmp_path / "bad.ckpt"
    torch.save(sd, path)
    with pytest.raises(UserError) as err:
        load_checkpoint(MODNet(), path)
    msg = str(err.value)
    assert "missing keys (1): f_branch.conv_f2x.layers.0.weight" in msg
    assert "unexpected keys (1): f_branch.extra.weight" in msg
    assert "hr_branch.tohr_enc2x.layers.0.bias (7,) != (32,)" in msg


def test_long_key_lists_are_truncated(tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({f"layer{i}.weight": torch.zeros(1) for i in range(30)}, path)
    with pytest.raises(UserError, match=r"unexpected keys \(30\): .* and 22 more") as err:
        load_checkpoint(MODNet(), path)
    assert len(str(err.value)) < 1200


class NotATensor:  # pickled by reference: loading it needs code execution
    pass


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": _perturbed(6).state_dict(), "extra": NotATensor()}, path)
    with pytest.raises(UserError, match="refused.*weights_only=True"):
        load_checkpoint(MODNet(), path)


@pytest.mark.parametrize("kind", ["missing", "empty", "directory", "text", "byte", "zip"])
def test_unreadable_checkpoints_are_user_errors(tmp_path, kind):
    path = tmp_path / "x.ckpt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "directory":
        path.mkdir()
    elif kind == "text":
        path.write_text("this is not a checkpoint\n")
    elif kind == "byte":
        path.write_bytes(b"x\n")  # fails on an unknown pickle opcode, not on a global
    elif kind == "zip":
        import zipfile

        with zipfile.ZipFile(path, "w") as z:
            z.writestr("hello.txt", "hi")
    with pytest.raises(UserError) as err:
        load_checkpoint(MODNet(), path)
    assert str(path) in str(err.value) and "refused" not in str(err.value)


def test_seeded_weights_are_deterministic_and_recalibrated():
    a, wa = seeded(3, calibration_size=(64, 64))
    b, _ = seeded(3, calibration_size=(64, 64))
    c, _ = seeded(4, calibration_size=(64, 64))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["backbone.model.features.0.0.weight"], sc["backbone.model.features.0.0.weight"])
    assert wa.kind == "seeded-random" and wa.seed == 3 and "recalibrated" in wa.note
    # Statistics come from the photographs, not the init (mean 0, variance 1).
    var = sa["lr_branch.conv_lr16x.layers.1.bnorm.running_var"]
    assert not torch.allclose(var, torch.ones_like(var))
    # Every IBNorm BatchNorm, after recalibration, sees unit-scale inputs on the photographs.
    x = torch.from_numpy(calibration_feeds(2, (64, 64))[1]["input"])
    with torch.no_grad():
        matte = a(x).numpy()
    assert not a.training
    assert matte.std() > 0.03  # a matte with structure, not a constant
    assert 0.05 < (matte > 0.5).mean() < 0.95  # both foreground and background present


def test_spec_imports_without_torch():
    code = ("import sys; from xopt.registry import get_model; s = get_model('modnet'); "
            "assert 'torch' not in sys.modules and 'onnxruntime' not in sys.modules; print(sorted(s.variants))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "int8-backbone" in out.stdout


def test_spec_declares_the_graph_contract():
    from xopt.registry import get_model

    spec = get_model("modnet")
    assert (spec.task, spec.opset, spec.exporter) == ("matting", 17, "legacy")
    assert list(spec.input_names) == ["input"] and list(spec.output_names) == ["output"]
    assert spec.dynamic_axes["input"] == {0: "batch", 2: "height", 3: "width"}
    fp16 = dict(spec.variants["fp16"].passes)["fp16"]
    assert {"Resize", "InstanceNormalization"} <= set(fp16["op_block_list"]) and fp16["keep_io_types"]
    assert dict(spec.variants["int8-backbone"].passes)["int8"]["scope"] == "backbone"
    shapes = [f["input"].shape for f in spec.validation_inputs(None)]
    example = spec.example_inputs(None)["input"].shape
    assert any(s[0] > 1 for s in shapes) and any(s[2:] != example[2:] for s in shapes)
    assert all(s[2] % 32 == 0 and s[3] % 32 == 0 for s in shapes)


def test_exported_graph_matches_torch_at_unseen_shapes_and_scopes_select_the_backbone(tmp_path, net):
    ort = pytest.importorskip("onnxruntime")
    import onnx

    from xopt.export.onnx_export import to_onnx
    from xopt.registry import get_model

    spec = get_model("modnet")
    path = tmp_path / "modnet.onnx"
    to_onnx(net, {"input": _x(64, 64).numpy()}, path, spec.input_names, spec.output_names, spec.dynamic_axes,
            spec.opset, spec.exporter, spec.patchers)
    names = [n.name for n in onnx.load(str(path)).graph.node]
    picked = [n for n in names if n.startswith(tuple(spec.scopes["backbone"]))]
    assert len(picked) > 50 and all("branch/backbone/" in n for n in picked)
    assert any(n.startswith("/hr_branch/") for n in names)
    assert not any(n.startswith(("/lr_branch/conv_lr/", "/hr_branch/conv_hr/")) for n in names)  # training heads
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for x in (_x(96, 32, batch=2, seed=1), _x(32, 160, seed=2)):
        with torch.no_grad():
            ref = net(x).numpy()
        got = sess.run(None, {"input": x.numpy()})[0]
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, atol=1e-4)
