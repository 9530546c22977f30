"""The runtime-only install (CI sets XOPT_WHEEL_CHECK=1): xopt's wheel with only `xopt[cpu]` in a
fresh venv has no torch, and `xopt run modnet` there mattes an image with an export made here."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not os.environ.get("XOPT_WHEEL_CHECK"),
                                reason="builds a wheel and a venv: set XOPT_WHEEL_CHECK=1 (CI does) or run "
                                       "tools/runtime_wheel_check.py")


def test_runtime_wheel_runs_modnet_without_torch(tmp_path):
    pytest.importorskip("torch")
    from PIL import Image

    from xopt.export.pipeline import export_model
    from xopt.models.modnet.pipeline import sample_images

    export_model("modnet", ["fp32"], out_dir=tmp_path / "art")
    Image.fromarray(sample_images(1)[0][::4, ::4]).save(tmp_path / "photo.png")
    tool = Path(__file__).resolve().parents[2] / "tools" / "runtime_wheel_check.py"
    spec = importlib.util.spec_from_file_location("runtime_wheel_check", tool)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res = mod.check(tmp_path / "art", "modnet", tmp_path / "photo.png", tmp_path / "matte.png", tmp_path / "work")
    assert res["torch_absent"] and not res["torch_imported"], res
    assert res["run_rc"] == 0, res["run_stderr"]
    assert "site-packages/xopt/runtime" in res["runtime_module"]  # the installed package, not the source tree
    with Image.open(tmp_path / "matte.png") as m:
        assert m.mode == "L" and m.size == Image.open(tmp_path / "photo.png").size
