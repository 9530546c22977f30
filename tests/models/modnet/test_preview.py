"""MODNet previews: the hook's files and numbers on known mattes, and a real profile's report
opened in a headless browser (the matte, the difference heatmap and the composite load)."""
from __future__ import annotations

import numpy as np
from PIL import Image

from xopt.models.modnet.preview import DIFF_SCALE, previews


def test_hook_writes_the_input_mattes_difference_and_composites(tmp_path):
    rgb = np.zeros((1, 3, 64, 96), np.float32)  # mid grey in the graph's [-1, 1] domain
    ref = np.zeros((1, 1, 64, 96), np.float32)
    ref[..., 16:48, 24:72] = 1.0
    out = ref.copy()
    out[..., 0, 0] = 0.5  # one pixel off by half the matte range
    recs = previews([{"input": rgb}], [{"output": ref}], [{"output": out}], tmp_path)
    assert [(r["role"], r["title"]) for r in recs] == [
        ("input", "input image"), ("reference", "FP32 matte"), ("reference", "FP32 composite on a checkerboard"),
        ("difference", "|variant − FP32| matte"), ("variant", "variant matte"),
        ("variant", "variant composite on a checkerboard")]
    diff = next(r for r in recs if r["role"] == "difference")
    assert diff["caption"].startswith("max 0.5, mean 8.14e-05") and diff["scale"]["hi"] == DIFF_SCALE
    matte = np.asarray(Image.open(tmp_path / "0-fp32-matte.png"))
    assert matte.shape[:2] == (64 * 2, 96 * 2)  # small previews are enlarged by whole pixels (to >= 240)
    assert matte[64, 96] == 255 and matte[5, 5] == 0
    comp = np.asarray(Image.open(tmp_path / "0-fp32-composite.png").convert("RGB")).astype(int)
    assert set(np.unique(comp[4:30, :40, 0])) <= {153, 204}  # alpha 0: the checkerboard shows through
    assert abs(comp[64, 96, 0] - 128) <= 1  # alpha 1: the grey input


def test_modnet_report_in_a_browser(tmp_path):
    from browser import profile_and_open

    report, state = profile_and_open("modnet", ["fp32", "fp16"], tmp_path / "art", tmp_path, frames=3, e2e=False,
                                     targets_override={"height": 128, "width": 128})
    titles = {i["alt"] for i in state["images"]}
    assert {"input image", "FP32 matte", "variant matte", "|variant − FP32| matte"} <= titles
    fp16 = report["results"][1]
    assert fp16["previews"] and fp16["drift_gate"]["passed"]
