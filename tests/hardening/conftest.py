"""One MODNet and one toy export for every hardening test; tests that damage an export work
on their own copy."""
from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="session")
def modnet_export(tmp_path_factory):
    """MODNet FP32 (seeded-random weights) exported once: ~15 s on two cores."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from xopt.export.pipeline import export_model

    out = tmp_path_factory.mktemp("modnet") / "art"
    export_model("modnet", ["fp32"], out_dir=out)
    return out


@pytest.fixture
def modnet_copy(modnet_export, tmp_path):
    return shutil.copytree(modnet_export, tmp_path / "art")


@pytest.fixture(scope="session")
def toy_export(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from toy_model import ensure_registered
    from xopt.export.pipeline import export_model

    ensure_registered()
    out = tmp_path_factory.mktemp("toy") / "art"
    export_model("toy", ["fp32"], out_dir=out)
    return out


@pytest.fixture
def toy_copy(toy_export, tmp_path):
    return shutil.copytree(toy_export, tmp_path / "toy-art")


@pytest.fixture(scope="session")
def demucs_export(tmp_path_factory):
    """The tiny HTDemucs preset exported to FP32 (the dynamo exporter: ~30-90 s on two busy
    cores, so the tests that use it are slow ones)."""
    pytest.importorskip("demucs")
    pytest.importorskip("onnxruntime")
    from xopt.export.pipeline import export_model

    out = tmp_path_factory.mktemp("demucs") / "art"
    export_model("demucs", ["fp32"], out_dir=out, config="tiny")
    return out
