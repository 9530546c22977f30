"""OpenFold previews in a tiny profile's report, opened in a headless browser: pLDDT per
residue, the C-alpha distance maps and their difference, and the 3D views drawn by 3Dmol.js."""
from __future__ import annotations

import pytest

pytestmark = [pytest.mark.openfold, pytest.mark.slow]


def test_openfold_report_in_a_browser(tmp_path):
    from browser import profile_and_open
    from xopt.export.pipeline import export_model

    export_model("openfold", ["fp32", "fp16"], out_dir=tmp_path / "art", config="tiny")
    report, state = profile_and_open("openfold", ["fp32", "fp16"], tmp_path / "art", tmp_path, structures=True,
                                     frames=2, targets_override={"residues": [24]})
    fp16 = report["results"][1]
    assert fp16["drift_gate"]["passed"] and fp16["drift"]["ca_rmsd"] < 0.1  # folded in the variant's process
    assert len(state["mols"]) == 2 * 2  # FP32 and fp16 for each of the two previewed inputs
    assert {"FP32 Cα distance map", "|variant − FP32| distances"} <= {i["alt"] for i in state["images"]}
    assert "pLDDT per residue" in state["text"]
