"""Mixed precision behind the drift gate, on a small MODNet (seeded weights, 128x128): streamed
calibration, per-layer localisation, the fallback search, and a gate it cannot meet."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from xopt.errors import UserError  # noqa: E402
from xopt.optimize.base import PassContext, get_pass  # noqa: E402

SIZE = (128, 128)
FAST = {"calibrate_methods": ["minmax"], "per_channel": "true", "speed_runs": 1, "gate_samples": 1,
        "calib_samples": 2, "reduce_range": True, "op_types": ["Conv"]}


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    from xopt.export.pipeline import export_model

    out = tmp_path_factory.mktemp("modnet")
    return export_model("modnet", ["fp32"], out_dir=out).path_of("fp32")


def _ctx(tmp_path):
    from xopt.models.modnet.pipeline import calibration_feeds

    return PassContext(model="modnet", calibration=lambda n: calibration_feeds(n, SIZE), workdir=tmp_path)


def _apply(fp32, tmp_path, name, **opts):
    p = get_pass("int8-gated")
    return p.apply(fp32, tmp_path / f"{name}.onnx", p.options.resolve({**FAST, **opts}), _ctx(tmp_path))


def test_streamed_calibration_gives_every_method_in_one_pass(fp32):
    from xopt.models.modnet.pipeline import calibration_feeds
    from xopt.optimize import calibration

    model = onnx.load(str(fp32))
    tensors, infos = calibration.candidate_tensors(model, {"Conv"})
    feeds = calibration_feeds(2, SIZE)
    found, facts = calibration.ranges(fp32, tensors, infos, feeds, calibration.METHODS, budget_mb=2)
    assert facts["calibration_groups"] > 1  # 2 MB of extra outputs per run: streamed in groups
    whole, _ = calibration.ranges(fp32, tensors, infos, feeds, ("minmax",), budget_mb=4096)
    assert found["minmax"] == whole["minmax"]  # splitting changes nothing
    for t in tensors:
        lo, hi = found["minmax"][t]
        for m in ("percentile", "entropy"):
            plo, phi = found[m][t]
            assert lo - 1e-6 <= plo <= phi <= hi + 1e-6
    assert any(found["entropy"][t][1] < found["minmax"][t][1] * 0.9 for t in tensors)  # clipping happens


def test_search_meets_a_reachable_gate_and_records_the_fallbacks(fp32, tmp_path):
    loose = _apply(fp32, tmp_path, "loose", max_drop=1.0)
    assert loose["gate"]["passed"] and loose["fp32_groups"] == []
    # nothing had to fall back, yet the curve says what falling back would cost (1, 2, 4, 8 groups)
    assert [c["fp32_groups"] for c in loose["drift_vs_speed"]] == [0, 1, 2, 4, 8, loose["groups"]]
    all_int8 = loose["all_low_precision"]["value"]
    assert 0 < all_int8 < 1.0
    # just under all-INT8: the search must keep at least the top-ranked group (seeded weights are
    # chaotic — one INT8 group alone can move the matte far — so a deeper target may be unreachable)
    target = all_int8 * 0.98
    facts = _apply(fp32, tmp_path, "gated", max_drop=target)
    kept = facts["fp32_groups"]
    assert kept and facts["gate"]["value"] <= target and facts["gate"]["bound_kind"] == "max_drop"
    assert all(k["why"].startswith("alone in FP32 improves mae") for k in kept)
    names = {r["group"] for r in facts["layer_drift"]}
    assert {"backbone stage 1", "HR branch conv_hr4x"} <= names and len(names) == facts["groups"]
    # ranked by improvement of the domain term; each row names its ONNX nodes and the tensor error
    gains = [r["improvement"] for r in facts["layer_drift"]]
    assert gains == sorted(gains, reverse=True)
    assert all(r["nodes"] and r["nodes"][0].endswith("Conv") for r in facts["layer_drift"])
    assert any(r["sqnr_db"] is not None for r in facts["layer_drift"])
    curve = facts["drift_vs_speed"]
    assert curve[0]["label"] == "all INT8" and curve[-1]["label"] == "FP32" and len(curve) >= 3
    # the kept groups' convolutions, and those the spec always keeps FP32, are not quantized
    from xopt.models.modnet.quant import fp32_nodes

    always = set(fp32_nodes(onnx.load(str(fp32))))
    assert facts["always_fp32_nodes"] == len(always) > 0
    model = onnx.load(str(tmp_path / "gated.onnx"))
    produced = {o: n.op_type for n in model.graph.node for o in n.output}
    kept_nodes = {n for k in kept for n in k["nodes"]} | always
    for node in model.graph.node:
        if node.op_type == "Conv":
            from_dq = produced.get(node.input[1]) == "DequantizeLinear"
            assert from_dq == (node.name not in kept_nodes), node.name
    from xopt.runtime.backends.ort import OrtSession
    from xopt.models.modnet.pipeline import calibration_feeds

    with OrtSession(tmp_path / "gated.onnx") as s:
        assert np.isfinite(s.run(calibration_feeds(1, SIZE)[0])["output"]).all()


def test_an_unreachable_gate_fails_naming_the_best_drift(fp32, tmp_path):
    with pytest.raises(UserError) as e:
        _apply(fp32, tmp_path, "never", max_drop=0.0, max_fp32_groups=2)
    msg = str(e.value)
    assert "no mix of precisions meets the gate mae drop <= 0" in msg
    assert "the best reached was mae" in msg and "groups in FP32" in msg and "x FP32's speed" in msg
    assert not (tmp_path / "never.onnx").exists()


def test_seeded_random_weights_get_the_spec_build_with_the_gate_measured_not_applied(fp32, tmp_path):
    """No --max-drop on seeded-random weights: no search (one build), the spec's calibration
    setting, the drift and the would-be verdict recorded, and a speed from alternating rounds."""
    p = get_pass("int8-gated")
    ctx = _ctx(tmp_path)
    ctx.weights = {"kind": "seeded-random", "seed": 0}
    opts = p.options.resolve({**FAST, "calibrate_methods": ["minmax", "entropy"], "per_channel": "auto",
                              "speed_rounds": 3})
    facts = p.apply(fp32, tmp_path / "fixed.onnx", opts, ctx)
    gate = facts["gate"]
    assert gate["applied"] is False and gate["passed"] is None and "seeded-random" in gate["why_not_applied"]
    assert isinstance(gate["would_pass"], bool) and gate["value"] > 0
    assert gate["text"].startswith("not applied: mae ")
    assert facts["gate_evaluations"] == 1 and facts["fp32_groups"] == [] and facts["layer_drift"] is None
    assert facts["calibration"] == {"method": "minmax", "per_channel": True} and facts["calibration_trials"] == []
    speed = gate["speed"]
    assert speed["rounds"] == 3 and speed["range"][0] <= speed["speedup"] <= speed["range"][1]
    assert (tmp_path / "fixed.onnx").is_file()
    # an explicit --max-drop gates seeded-random weights too
    strict = p.options.resolve({**FAST, "max_drop": 1.0, "speed_rounds": 0})
    gated = p.apply(fp32, tmp_path / "gated.onnx", strict, ctx)
    assert gated["gate"]["applied"] is True and gated["gate"]["passed"] is True


def test_a_failed_gate_carries_what_it_reached(fp32, tmp_path):
    from xopt.errors import GateFailed

    with pytest.raises(GateFailed) as e:
        _apply(fp32, tmp_path, "never", max_drop=0.0, max_fp32_groups=1, speed_rounds=2)
    facts = e.value.facts
    assert facts["gate"]["passed"] is False and facts["best"]["fp32_groups"] <= 1
    assert facts["best"]["value"] > 0 and facts["best"]["speed"]["rounds"] == 2
    assert len(facts["worst_groups"]) == 3 and facts["gate_evaluations"] >= facts["groups"]
    assert e.value.exit_code == 3
