"""report.html / report.md from the report JSON: the verdict's known answers, previews copied
and embedded, user text escaped, nothing loaded from the network, the size bound, and
`xopt report OLD NEW --out` as a page with deltas and their direction."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest

from toy_model import ensure_registered
from xopt import previews as pv
from xopt.analysis.profiler import profile_model
from xopt.analysis.report import render_markdown, write_reports
from xopt.analysis.report_html import render_html
from xopt.analysis.verdict_lines import verdict_lines

EVIL = "<script>alert(1)</script>.png"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    ensure_registered()
    return profile_model("toy", ["fp32", "fp16", "int8"], artifacts=tmp_path_factory.mktemp("art"), frames=4)


def stage_previews(report: dict, staging: Path) -> dict:
    """Preview files of every kind for each variant, written with xopt.previews the way a
    model's hook writes them, and recorded the way the profiler records them."""
    from xopt.analysis.previews import run_hook

    class Spec:  # the one field run_hook reads: a hook
        @staticmethod
        def previews(feeds, refs, outs, out_dir):
            recs = []
            for i, (f, r, o) in enumerate(zip(feeds, refs, outs)):
                a, b = r["output"][0, 0], o["output"][0, 0]
                meta = {"input": i, "input_label": f"toy input {i} from {EVIL}"}
                recs += [pv.image(out_dir, f"{i}-in.png", (f["input"][0, 0] + 1) * 127.5, "input", EVIL, **meta),
                         pv.image(out_dir, f"{i}-ref.png", a * 255, "reference", "FP32 output", **meta),
                         pv.heatmap(out_dir, f"{i}-diff.png", np.abs(b - a), "difference", "|Δ|", lo=0, hi=0.05,
                                    unit=" Å", scale="Inferno", reduce="max", caption=EVIL, **meta),
                         pv.image(out_dir, f"{i}-out.png", b * 255, "variant", "variant output", **meta),
                         pv.audio(out_dir, f"{i}-ref.ogg", np.sin(np.arange(4410) / 7.0)[None], 44100, "reference",
                                  "tone", group="sound", **meta),
                         pv.series(out_dir, f"{i}-line.csv", [1, 2, 3], {"FP32": [1, 2, 3], "variant": [1, 2, 4]},
                                   "variant", "per position", "position", "value (units)", better="higher",
                                   group="series", **meta)]
            return recs

    rng = np.random.default_rng(0)
    for r in report["results"]:
        feeds = [{"input": rng.uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32)} for _ in range(2)]
        refs = [{"output": rng.uniform(0, 1, (1, 1, 16, 16)).astype(np.float32)} for _ in feeds]
        outs = refs if r["variant"] == "fp32" else [{"output": np.clip(x["output"] + 0.01, 0, 1)} for x in refs]
        r.update(run_hook(Spec, r["variant"], feeds, refs, outs, staging, 2))
    return report


def test_verdict_known_answers(report):
    rep = copy.deepcopy(report)
    base, fp16, int8 = rep["results"]
    base["latency_e2e_ms"] = {"p50": 100.0}
    fp16["latency_e2e_ms"] = {"p50": 50.0}
    base["latency_ms"]["p50"], fp16["latency_ms"]["p50"], int8["latency_ms"]["p50"] = 40.0, 80.0, 10.0
    fp16["drift_gate"] = {"key": "mae", "value": 0.01, "unit": "", "passed": True, "bound": 0.03,
                          "ratio_to_noise": 1.0}
    int8["drift_gate"] = {"key": "mae", "value": 0.2, "unit": "", "passed": False, "bound": 0.03,
                          "ratio_to_noise": 20.0, "text": "mae 0.2 misses"}
    lines = verdict_lines(rep)
    # faster end to end but slower model-only (which end to end contains): noise decided both ratios
    assert "no measurable difference on this busy machine" in lines[1] and "×" not in lines[1].split(";")[0]
    fp16["latency_e2e_ms"], fp16["latency_ms"] = {"p50": 200.0, "cv": 0.01}, {"p50": 80.0, "cv": 0.01}
    lines = verdict_lines(rep)
    assert "2.00× slower end to end, 2.00× slower model-only" in lines[1]
    assert "expected on a CPU" in lines[1]  # FP16 slower on ORT CPU is explained, not hidden
    fp16["latency_e2e_ms"], fp16["latency_ms"] = {"p50": 50.0, "cv": 0.3}, {"p50": 20.0, "cv": 0.01}
    base["latency_e2e_ms"] = {"p50": 60.0, "cv": 0.05}  # 50 ± 15 against 60 ± 3: the spreads overlap
    lines = verdict_lines(rep)
    assert "no measurable difference end to end" in lines[1] and "2.00× faster model-only" in lines[1]
    fp16["latency_ms"] = {"p50": 44.0, "cv": 0.2}
    assert verdict_lines(rep)[1].split(" — ")[1].startswith("no measurable difference on this busy machine;")
    assert "fails its drift gate: mae 0.2 (20.0× the noise floor" in lines[2]
    assert lines[0].startswith("fp32 (ort-cpu) — the FP32 baseline") and "MB budget" in lines[0]
    ship = lines[-1]  # a GPU profile measured on this CPU host: the precision is named, the speed is not claimed
    assert ship.startswith("Ship for rtx3060-laptop-12gb: fp16") and "not measured on this CPU host" in ship
    assert "Fastest that passes on this machine: none measurably faster than fp32" in ship
    rep["profile"]["kind"] = "cpu"  # a CPU profile: ship the variant measurably fastest here, or FP32
    assert verdict_lines(rep)[-1].startswith("Ship for rtx3060-laptop-12gb: fp32 — no variant that passes")
    fp16["latency_e2e_ms"], fp16["latency_ms"] = {"p50": 30.0, "cv": 0.01}, {"p50": 20.0, "cv": 0.01}
    assert verdict_lines(rep)[-1].startswith("Ship for rtx3060-laptop-12gb: fp16 — the fastest variant")
    fp16["latency_ms"] = {"p50": 31.0, "cv": 0.01}  # model-only 3 % above end to end: noise of at least that
    assert "2.00× faster end to end, 1.29× faster model-only" in verdict_lines(rep)[1]  # far beyond it: measured
    base["latency_e2e_ms"], base["latency_ms"] = {"p50": 31.5, "cv": 0.01}, {"p50": 32.0, "cv": 0.01}
    assert "no measurable difference on this busy machine" in verdict_lines(rep)[1]  # 5 %, 3 %: within 2 x 3 %
    for r in rep["results"]:
        r["drift_gate"]["passed"] = False
    assert "none of the profiled variants" in verdict_lines(rep)[-1]


def test_previews_copied_embedded_and_escaped(report, tmp_path):
    rep = stage_previews(copy.deepcopy(report), tmp_path / "staging")
    rep["command"] = f"xopt profile toy --inputs '{EVIL}'"
    out = tmp_path / "out"
    paths = write_reports(rep, out, previews_dir=tmp_path / "staging")
    html = paths["html"].read_text(encoding="utf-8")
    saved = json.loads(paths["json"].read_text())
    files = [rec["file"] for r in saved["results"] for rec in r.get("previews", [])]
    assert files and all((out / f).is_file() for f in files)
    # the input and FP32 side is written by every variant but kept once
    assert len({f for f in files if f.endswith("-in.png")}) == 2
    assert "fp32: outputs identical to the FP32 reference" in html
    assert EVIL not in html and "&lt;script&gt;alert(1)&lt;/script&gt;.png" in html
    assert "data:image/png;base64," in html and "data:audio/" in html
    markup = re.sub(r"<script>.*?</script>", "", html, flags=re.S)  # the libraries' own code aside
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", markup), "nothing may load from the network"
    assert "<link" not in markup and "<script src" not in html and len(html.encode()) < 10_000_000
    md = paths["md"].read_text(encoding="utf-8")
    assert "## Verdict" in md and "![variant output](previews/fp16/0-out.png)" in md
    assert EVIL not in re.sub(r"`[^`]*`", "", md) and "(CSV)" in md  # code spans show HTML as text
    # a re-run replaces what xopt wrote; a preview file edited by hand is refused
    write_reports(rep, out, previews_dir=tmp_path / "staging")
    (out / files[0]).write_bytes(b"edited")
    from xopt.errors import OutputExistsError

    with pytest.raises(OutputExistsError):
        write_reports(rep, out, previews_dir=tmp_path / "staging")


def test_a_report_path_outside_previews_is_not_read(report, tmp_path):
    rep = copy.deepcopy(report)
    rep["results"][1]["previews"] = [{"input": 0, "group": "", "role": "variant", "kind": "image", "title": "x",
                                      "file": "../../etc/passwd"}]
    html = render_html(rep, tmp_path)
    assert "file missing: ../../etc/passwd" in html


def test_other_kinds_render(tmp_path):
    bench = json.loads((ROOT / "benchmarks" / "results" / "modnet-cpu-bench.json").read_text())
    html = render_html(bench)
    assert "Speed-up per contender" in html and "higher is better" in html and "Plotly.newPlot" in html
    fit = {"schema_version": 2, "kind": "fit", "model": "toy", "weights": {"kind": "seeded-random"},
           "machine": {"cpu": "x", "versions": {}, "gpus": []}, "profile": {"name": "p", "budget_mb": 1000},
           "results": [], "extra": {"curve": [{"variant": "fp32", "n": n, "peak_mb": 100.0 * n, "measured": n < 4}
                                              for n in (1, 2, 4, 8)],
                                    "fit": {"head": ["variant", "max n"], "rows": [["fp32", 8]]}}}
    fit["extra"]["choice"] = {"variant": "fp32", "chunk": 4}
    html = render_html(fit)
    assert "Memory against input size" in html and "budget 1000 MB" in html and "Fits p: variant fp32, chunk 4" in html
    assert "Memory against input size" not in render_markdown(fit) and "| variant | max n |" in render_markdown(fit)


def test_compare_two_reports_as_html(report, tmp_path):
    from xopt.cli import main

    old, new = tmp_path / "old.json", tmp_path / "new.json"
    slower = copy.deepcopy(report)
    for r in slower["results"]:
        r["latency_ms"] = {**r["latency_ms"], **{k: r["latency_ms"][k] * 2 for k in ("p50", "p90", "p99")}}
    old.write_text(json.dumps(report))
    new.write_text(json.dumps(slower))
    assert main(["report", str(old), str(new), "--fail-on-regression", "10", "--out", str(tmp_path / "cmp")]) == 3
    html = (tmp_path / "cmp" / "report.html").read_text(encoding="utf-8")
    assert "Deltas" in html and "+100.0%" in html and "worse" in html and "Latency change" in html
    md = (tmp_path / "cmp" / "report.md").read_text(encoding="utf-8")
    assert "**regression**" in md and "| fp16 (ort-cpu) | model p50 ms |" in md
    assert main(["report", str(old), "--out", str(tmp_path / "one")]) == 0  # one report, re-rendered
    assert "Ship for" in (tmp_path / "one" / "report.html").read_text(encoding="utf-8")
    assert main(["report", str(old), str(new), str(old), "--out", str(tmp_path / "three")]) == 0
    assert "comparison of 3 reports" in (tmp_path / "three" / "report.html").read_text(encoding="utf-8")


def test_hand_drawn_svg_is_gone():
    assert not (ROOT / "analysis" / "svg.py").exists()


def test_previews_past_the_embedding_budget_are_linked(report, tmp_path, monkeypatch):
    from xopt.analysis import preview_html

    rep = stage_previews(copy.deepcopy(report), tmp_path / "staging")
    paths = write_reports(rep, tmp_path / "out", previews_dir=tmp_path / "staging")
    monkeypatch.setattr(preview_html, "MAX_EMBED", 3000)  # room for a few small PNGs only
    html = render_html(json.loads(paths["json"].read_text()), tmp_path / "out")
    assert "data:image/png;base64," in html and 'src="previews/' in html
    assert "linked as files beside this report" in html


def test_mixed_precision_sections_render(report):
    rep = copy.deepcopy(report)
    rep["extra"]["layer_drift"] = [{"group": "backbone stage 1", "nodes": ["/a/Conv"], "drift": 0.2},
                                   {"group": "<b>hr</b> branch", "nodes": ["/b/Conv"], "drift": 0.05}]
    rep["extra"]["drift_vs_speed"] = [{"label": "all int8", "speedup": 2.0, "drift": 0.2},
                                      {"label": "stage 1 in fp32", "speedup": 1.7, "drift": 0.05}]
    html = render_html(rep)
    assert "Per-layer drift (worst first)" in html and "Drift against speed" in html
    assert "<b>hr</b>" not in html and "&lt;b&gt;hr&lt;" in html  # escaped inside the figure's JSON
