"""report.html in a real headless browser (Debian's chromium through playwright): no script
error, no network request, every plot drawn, every preview kind loaded (images, audio, a 3D
structure, a series chart), and report text that looks like HTML shown as text."""
from __future__ import annotations

import copy

import numpy as np

from browser import assert_rendered, keep_screenshot, open_report
from test_report_html import EVIL, report, stage_previews  # noqa: F401 - the module fixture
from xopt import previews as pv


def helix_pdb(n: int = 12) -> str:
    """An ideal alpha helix's backbone (N, CA, C, O) with a falling score in the B-factor column."""
    lines, serial = [], 1
    for i in range(n):
        for name, r, dz, dphi in (("N", 1.55, -0.9, -0.5), ("CA", 2.3, 0.0, 0.0), ("C", 1.6, 0.9, 0.5),
                                  ("O", 1.8, 1.9, 0.7)):
            phi = np.radians(100.0 * i) + dphi
            x, y, z = r * np.cos(phi), r * np.sin(phi), 1.5 * i + dz
            b = 95.0 - 5.0 * i
            lines.append(f"ATOM  {serial:5d}  {name:<3} ALA A{i + 1:4d}    {x:8.3f}{y:8.3f}{z:8.3f}  1.00{b:6.2f}"
                         f"           {name[0]}")
            serial += 1
    return "\n".join(lines + ["END"]) + "\n"


def test_report_in_a_browser(report, tmp_path):
    from xopt.analysis.report import write_reports

    rep = stage_previews(copy.deepcopy(report), tmp_path / "staging")
    rep["command"] = f"xopt profile toy --inputs '{EVIL}'"
    folder = tmp_path / "staging" / "fp16"
    ref = pv.structure(folder, "ref.pdb", helix_pdb(), "reference", "FP32 structure", group="3D", input=0)
    var = pv.structure(folder, "var.pdb", helix_pdb(), "variant", EVIL, group="3D", input=0, overlay="ref.pdb")
    rep["results"][1]["previews"] += [{**ref, "file": "previews/fp16/ref.pdb"},
                                      {**var, "file": "previews/fp16/var.pdb", "overlay": "previews/fp16/ref.pdb"}]
    paths = write_reports(rep, tmp_path / "out", previews_dir=tmp_path / "staging")
    state = open_report(paths["html"], tmp_path / "toy.png")
    assert_rendered(state, previews=True, structures=True)
    assert len(state["mols"]) == 2 and len(state["audio"]) == 2  # the FP32 tone once per input
    assert EVIL in state["text"]  # shown as text, and (open_report) no dialog opened
    assert (tmp_path / "toy.png").stat().st_size > 10_000
    keep_screenshot(tmp_path / "toy.png", "toy-report.png")
