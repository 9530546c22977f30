import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xopt.errors import UserError
from xopt.manifest import Manifest, from_json, load

VARIANT = {"name": "fp32", "precision": "fp32", "path": "m_fp32.onnx", "sha256": "0" * 64, "opset": 17,
           "inputs": [], "outputs": [], "parity": {"max_abs": 0.0, "max_rel": 0.0, "passed": True}}


def test_round_trip(tmp_path):
    m = Manifest(model="m", weights={"kind": "seeded-random", "seed": 0}, variants=[VARIANT])
    m.save(tmp_path)
    back = load(tmp_path)
    assert back.model == "m" and back.variant("fp32")["sha256"] == "0" * 64
    assert back.path_of("fp32") == tmp_path / "m_fp32.onnx"


@pytest.mark.parametrize("mutate, why", [
    (lambda d: d.pop("schema_version"), "schema_version"),
    (lambda d: d.update(schema_version=99), "newer"),
    (lambda d: d.pop("weights"), "weights"),
    (lambda d: d["variants"][0].pop("sha256"), "sha256"),
    (lambda d: d["variants"][0].update(path="../../etc/passwd"), "outside"),
    (lambda d: d["variants"][0].update(path="/abs.onnx"), "outside"),
])
def test_invalid_manifests(mutate, why):
    data = {"schema_version": 1, "model": "m", "weights": {"kind": "x"}, "variants": [dict(VARIANT)]}
    mutate(data)
    with pytest.raises(UserError, match=why):
        from_json(data)


def test_corrupt_and_missing(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(UserError, match="not JSON"):
        load(tmp_path)
    with pytest.raises(UserError, match="no manifest"):
        load(tmp_path / "nowhere")


@settings(max_examples=80, deadline=None)
@given(st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=4)),
                    lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.sampled_from(
                        ["schema_version", "model", "weights", "variants", "name", "path"]), c, max_size=4)),
                    max_leaves=12))
def test_manifest_parser_only_raises_user_errors(data):
    try:
        from_json(json.loads(json.dumps(data)))
    except UserError:
        pass
