"""OpenFold's FP16 trunk behind the Cα-RMSD gate: the Evoformer blocks as units, localised and
searched on the tiny config (folded with OpenFold's own structure module)."""
from __future__ import annotations

import pytest

from xopt.errors import UserError

pytestmark = pytest.mark.openfold


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    pytest.importorskip("openfold")
    from xopt.export.pipeline import export_model

    out = tmp_path_factory.mktemp("of-gated")
    return export_model("openfold", ["fp16-gated"], out_dir=out, config="tiny",
                        pass_options={"fp16-gated": {"speed_runs": 1, "max_drop": 5.0}})


def test_fp16_trunk_is_localised_by_evoformer_block(exported):
    # seeded-random weights: the gate decides only because a limit is given (--max-drop 5 Å)
    entry = exported.variant("fp16-gated")
    facts = next(p["facts"] for p in entry["passes"] if p["name"] == "fp16-gated")
    assert facts["gate"]["key"] == "ca_rmsd" and facts["gate"]["passed"]
    rows = facts["layer_drift"]
    assert {r["group"] for r in rows} == {"Evoformer block 0", "Evoformer block 1"}
    assert all(r["nodes"][0].startswith("/blocks.") and "improvement" in r for r in rows)
    assert "graphs" not in entry  # the trunk alone: the torch-free host graphs are not part of this variant


def test_fp16_trunk_gate_that_cannot_be_met_names_the_best(exported, tmp_path):
    from xopt.optimize.base import PassContext, get_pass
    from xopt.models.openfold import SPEC

    built = SPEC.build(config=SPEC.config("tiny"), seed=0)
    p = get_pass("fp16-gated")
    ctx = PassContext(model="openfold", calibration=lambda n: SPEC.calibration_inputs(built, n), workdir=tmp_path)
    opts = p.options.resolve({"gate_inputs": "calibration", "gate_samples": 1, "speed_runs": 0, "max_drop": 0.0})
    with pytest.raises(UserError, match=r"the best reached was ca_rmsd [0-9.e-]+ Å with [01] of 2 groups in FP32"):
        p.apply(exported.path_of("fp32"), tmp_path / "x.onnx", opts, ctx)
    assert not (tmp_path / "x.onnx").exists()
