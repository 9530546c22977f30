"""One tiny OpenFold export shared by the test files of this folder (about a minute)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """fp32 (main graph + all graphs), fp16 and fp32-chunk (host-driven, chunk 4) of the tiny config."""
    pytest.importorskip("openfold")
    from xopt.export.pipeline import export_model

    out = tmp_path_factory.mktemp("openfold-tiny")
    return export_model("openfold", ["fp32", "fp16", "fp32-chunk"], out_dir=out, config="tiny")


@pytest.fixture(scope="session")
def tiny_built():
    pytest.importorskip("openfold")
    from xopt.models.openfold import SPEC

    return SPEC.build(config=SPEC.config("tiny"), seed=0)

