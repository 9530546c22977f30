"""tools/train_modnet_standin.py at toy size: the official checkpoint layout, the sidecar that
earns the stand-in note (and only with a matching sha256), refusing foreign files, learning."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("skimage")

from xopt.errors import OutputExistsError  # noqa: E402
from xopt.hashing import sha256_file  # noqa: E402
from xopt.models.modnet import build  # noqa: E402
from xopt.models.modnet.net import MODNet  # noqa: E402
from xopt.models.modnet.weights import STANDIN_NOTE, load_checkpoint  # noqa: E402

TOOL = Path(__file__).resolve().parents[2] / "tools" / "train_modnet_standin.py"


def _load():
    spec = importlib.util.spec_from_file_location("_xopt_tool_train_modnet_standin", TOOL)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


tool = _load()
# one thread: on a busy machine two threads wait on each other at every op and a toy step takes seconds
TINY = dict(size=64, batch=2, steps=2, val_count=2, val_size=64, minutes=5.0, log_every=1, threads=1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from xopt.models.modnet import weights

    out = tmp_path_factory.mktemp("standin") / "standin.ckpt"
    real = weights.seeded
    with pytest.MonkeyPatch.context() as mp:  # the baseline's BatchNorm calibration at toy size too
        mp.setattr(weights, "seeded", lambda seed: real(seed, (64, 64)))
        meta = tool.run(tool.Recipe(**TINY), out, log=lambda s: None)
    return out, meta


def test_checkpoint_has_the_official_release_layout(trained):
    out, _ = trained
    state = torch.load(out, map_location="cpu", weights_only=True)
    assert all(k.startswith("module.") for k in state)
    assert set(state) == {"module." + k for k in MODNet().state_dict()}  # both backbone aliases, both heads


def test_export_path_loads_it_with_the_standin_note(trained):
    out, meta = trained
    built = build(checkpoint=out)
    assert built.weights.kind == "checkpoint"
    assert built.weights.note == STANDIN_NOTE
    assert built.weights.sha256 == meta["sha256"] == sha256_file(out)
    sidecar = json.loads(tool.sidecar_of(out).read_text())
    assert sidecar["sha256"] == sha256_file(out) and sidecar["steps"] == TINY["steps"]
    assert sidecar["hyperparameters"]["seed"] == 0 and sidecar["threads"] == TINY["threads"]
    for side in ("standin", "seeded_random"):
        assert 0.0 <= sidecar["validation"][side]["mae"] <= 1.0


def test_a_sidecar_for_other_bytes_earns_no_note(trained, tmp_path):
    out, _ = trained
    copy = tmp_path / "copy.ckpt"
    state = torch.load(out, map_location="cpu", weights_only=True)
    state["module.f_branch.conv_f.1.layers.0.bias"] += 1.0  # same layout, other weights
    torch.save(state, copy)
    tool.sidecar_of(copy).write_text(tool.sidecar_of(out).read_text())
    assert load_checkpoint(MODNet(), copy).note == ""
    tool.sidecar_of(copy).write_bytes(b"\xff not json")
    assert load_checkpoint(MODNet(), copy).note == ""


def test_foreign_files_are_refused_without_force(trained, tmp_path):
    out, _ = trained
    assert tool.check_out(out, force=False)  # its own output may be replaced
    foreign = tmp_path / "model.ckpt"
    foreign.write_bytes(b"someone else's")
    with pytest.raises(OutputExistsError):
        tool.check_out(foreign, force=False)
    assert tool.main(["--out", str(foreign), "--steps", "1", "--size", "64"]) == 1
    assert foreign.read_bytes() == b"someone else's"
    assert tool.check_out(foreign, force=True)
    lone = tmp_path / "lone.ckpt"
    tool.sidecar_of(lone).write_text("{}")  # a sidecar this script did not write, beside nothing
    with pytest.raises(OutputExistsError):
        tool.check_out(lone, force=False)


def test_loss_falls_on_a_fixed_batch():
    recipe = tool.Recipe(**TINY)
    rng = tool.seed_everything(0)
    img, alpha = tool.batch(rng, 2, 64, tool._photos())
    net = MODNet()
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        totals = [tool.train_step(recipe, net, opt, img, alpha)["total"] for _ in range(5)]
    finally:
        torch.set_num_threads(threads)
    assert totals[-1] < 0.8 * totals[0], totals


def test_trimap_marks_the_soft_band_unknown():
    alpha = torch.zeros(1, 1, 32, 32)
    alpha[..., 8:24, 8:24] = 1.0
    alpha[..., 8:24, 24] = 0.4
    tri = tool.trimap(alpha, 2)
    assert set(np.unique(tri.numpy())) == {0.0, 0.5, 1.0}
    assert tri[0, 0, 16, 16] == 1.0 and tri[0, 0, 0, 0] == 0.0
    assert (tri[0, 0, 8:24, 22:27] == 0.5).all()
