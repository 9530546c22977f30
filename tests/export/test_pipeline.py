import json

import numpy as np
import pytest

from toy_model import ensure_registered
from xopt.errors import OutputExistsError, ParityError, UserError
from xopt.export.pipeline import export_model
from xopt.manifest import load


@pytest.fixture(scope="module", autouse=True)
def toy():
    return ensure_registered()


def test_export_writes_variants_and_manifest(tmp_path):
    m = export_model("toy", ["fp16", "int8"], out_dir=tmp_path)
    names = [v["name"] for v in m.variants]
    assert names == ["fp32", "fp16", "int8"]
    data = json.loads((tmp_path / "manifest.json").read_text())
    assert data["schema_version"] == 1 and data["weights"] == {"kind": "seeded-random", "seed": 0}
    for v in data["variants"]:
        assert (tmp_path / v["path"]).exists()
        assert v["parity"]["passed"] and v["opset"] == 17
        assert set(v["parity"]) >= {"max_abs", "max_rel", "passed"}
        assert v["inputs"][0]["name"] == "input" and v["inputs"][0]["shape"][0] == "batch"
    assert "torch" in data["versions"] and "onnx" in data["versions"]
    assert not list(tmp_path.glob(".xopt-tmp-*")), "temporary directory left behind"


def test_second_identical_export_is_up_to_date(tmp_path):
    export_model("toy", ["fp32"], out_dir=tmp_path)
    stat = (tmp_path / "toy_fp32.onnx").stat()
    export_model("toy", ["fp32"], out_dir=tmp_path)
    assert (tmp_path / "toy_fp32.onnx").stat().st_mtime_ns == stat.st_mtime_ns, "nothing rewritten"


def test_other_options_or_foreign_files_need_force(tmp_path):
    export_model("toy", ["fp32", "int8"], out_dir=tmp_path)
    before = (tmp_path / "toy_int8.onnx").read_bytes()
    with pytest.raises(UserError, match="other pass options"):
        export_model("toy", ["int8"], out_dir=tmp_path, pass_options={"int8": {"calib_samples": 2}})
    assert (tmp_path / "toy_int8.onnx").read_bytes() == before
    (tmp_path / "toy_fp16.onnx").write_bytes(b"user file")
    with pytest.raises(OutputExistsError):
        export_model("toy", ["fp16"], out_dir=tmp_path)
    assert (tmp_path / "toy_fp16.onnx").read_bytes() == b"user file"
    export_model("toy", ["fp16"], out_dir=tmp_path, force=True)
    assert (tmp_path / "toy_fp16.onnx").read_bytes() != b"user file"


def test_adding_a_variant_keeps_the_baseline(tmp_path):
    export_model("toy", ["fp32"], out_dir=tmp_path)
    sha = load(tmp_path).variant("fp32")["sha256"]
    m = export_model("toy", ["fp16"], out_dir=tmp_path)
    assert m.variant("fp32")["sha256"] == sha and m.has("fp16")


def test_other_weights_into_same_dir_refused(tmp_path):
    export_model("toy", ["fp32"], out_dir=tmp_path)
    with pytest.raises(UserError, match="other weights"):
        export_model("toy", ["fp16"], out_dir=tmp_path, seed=3)


def test_a_parity_failure_is_recorded_and_the_baseline_kept(tmp_path):
    """A failing variant is a result: the FP32 baseline that passed is written, the variant that
    failed is not, and the manifest records its per-output numbers."""
    m = export_model("toy", ["strict16"], out_dir=tmp_path)
    assert m.has("fp32") and not m.has("strict16")
    (rec,) = m.failed
    assert rec["name"] == "strict16" and rec["stage"] == "parity"
    assert "output: max_abs=" in rec["error"] and "max_rel=" in rec["error"] and "\n" not in rec["error"]
    assert rec["facts"]["outputs"]["output"]["max_abs"] > 1e-9 and rec["facts"]["tolerance"] == {"max_abs": 1e-9}
    assert not (tmp_path / "toy_strict16.onnx").exists()
    assert load(tmp_path).failed == m.failed  # on disk, for profile, bench and a re-export


def test_a_failing_fp32_baseline_still_stops_the_export(tmp_path, monkeypatch):
    """Every other variant is built from FP32: when it fails nothing is written."""
    from xopt.export import pipeline

    def refuse(outs, label, feeds, refs, tolerance, reference="PyTorch FP32"):
        raise ParityError(label, {"output": {"max_abs": 1.0, "max_rel": 1.0, "mean_abs": 1.0}}, {"max_abs": 0.0})

    monkeypatch.setattr(pipeline, "gate_outputs", refuse)
    with pytest.raises(ParityError):
        export_model("toy", ["fp16"], out_dir=tmp_path)
    assert not (tmp_path / "manifest.json").exists() and not list(tmp_path.glob("*.onnx"))


def test_checkpoint_provenance(tmp_path):
    import torch

    built = ensure_registered().build(seed=5)
    ckpt = tmp_path / "toy.pt"
    torch.save(built.module.state_dict(), ckpt)
    m = export_model("toy", ["fp32"], out_dir=tmp_path / "out", checkpoint=str(ckpt))
    assert m.weights["kind"] == "checkpoint" and len(m.weights["sha256"]) == 64


def test_tolerance_override(tmp_path):
    m = export_model("toy", ["strict16"], out_dir=tmp_path, tolerances={"strict16": {"max_abs": 1.0}})
    assert m.variant("strict16")["parity"]["tolerance"] == {"max_abs": 1.0}
    assert np.isfinite(m.variant("strict16")["parity"]["max_abs"])
