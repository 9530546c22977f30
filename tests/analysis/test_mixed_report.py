"""The profile report's mixed-precision sections, read from a manifest's gated pass facts."""
from xopt.analysis.mixed_report import sections
from xopt.analysis.report import render_markdown
from xopt.manifest import Manifest

FACTS = {
    "gate": {"text": "mae 0.004 meets mae <= 0.005 (3x the noise floor 0.0017) with 1 of 3 groups in FP32",
             "passed": True},
    "gate_inputs": "device profile rtx3060-laptop-12gb inputs, seed 0", "gate_evaluations": 6, "groups": 3,
    "fp32_groups": [{"group": "backbone stage 1", "nodes": ["/a/Conv"], "why": "alone in FP32 improves mae by 0.01"}],
    "layer_drift": [
        {"group": "backbone stage 1", "nodes": ["/a/Conv", "/b/Conv", "/c/Conv", "/d/Conv"], "drift": 0.02,
         "drift_if_fp32": 0.01, "improvement": 0.01, "sqnr_db": 18.2},
        {"group": "HR branch conv_hr4x", "nodes": ["/hr/Conv"], "drift": 0.02, "drift_if_fp32": 0.019,
         "improvement": 0.001, "sqnr_db": 25.0}],
    "drift_vs_speed": [{"label": "all INT8", "fp32_groups": 0, "drift": 0.02, "speedup": 1.6, "passed": False},
                       {"label": "1 FP32", "fp32_groups": 1, "drift": 0.004, "speedup": 1.5, "passed": True},
                       {"label": "FP32", "fp32_groups": 3, "drift": 0.0, "speedup": 1.0, "passed": True}],
}


def _manifest():
    return Manifest(model="modnet", weights={"kind": "seeded-random"}, variants=[
        {"name": "fp32", "precision": "fp32", "passes": [{"name": "slim", "facts": {}}]},
        {"name": "int8", "precision": "int8", "passes": [{"name": "slim", "facts": {}},
                                                          {"name": "int8-gated", "facts": FACTS}]}])


def test_gated_variants_get_a_per_layer_table_and_a_curve():
    extra, per_variant = sections(_manifest(), ["fp32", "int8"])
    assert list(per_variant) == ["int8"]  # the FP32 baseline has no gated pass
    assert [r["group"] for r in extra["layer_drift"]] == ["backbone stage 1", "HR branch conv_hr4x"]
    assert extra["layer_drift"][0]["kept_fp32"] and not extra["layer_drift"][1]["kept_fp32"]
    assert [c["label"] for c in extra["drift_vs_speed"]] == ["all INT8", "1 FP32", "FP32"]
    md = extra["mixed precision"]["markdown"]
    assert "| 1 | backbone stage 1 | `/a/Conv`, `/b/Conv`, `/c/Conv` (+1 more) | 0.01 | 0.01 | 18.2 | yes |" in md
    assert "| 1 FP32 | 1 | 0.004 | 1.50 | yes |" in md


def test_the_markdown_report_carries_the_section():
    extra, _ = sections(_manifest(), ["int8"])
    from xopt.report_schema import SCHEMA_VERSION

    report = {"schema_version": SCHEMA_VERSION, "kind": "profile", "model": "modnet",
              "weights": {"kind": "seeded-random"}, "results": [], "settings": {}, "machine": {"cpu": "x"},
              "profile": {"name": "rtx3060-laptop-12gb"}, "extra": extra}
    md = render_markdown(report)
    assert "## mixed precision" in md and "HR branch conv_hr4x" in md


def test_no_gated_variant_no_section():
    assert sections(_manifest(), ["fp32"]) == ({}, {})
