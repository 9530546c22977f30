"""Render report.json into Markdown, HTML (analysis/report_html.py: Plotly charts, previews) and
terminal tables.

The JSON is the record; everything here is derived from it and nothing else.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from xopt.atomic import write_json, write_text
from xopt.report_schema import validate
from xopt.stats import NOISY_CV, figure, megabytes, timing_ms  # NOISY_CV: sweep_report reads it here
from xopt.written import ours  # which files a re-run may replace (the record reports share with run)


def _fmt(v, digits=4) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        return figure(v, digits)  # 10,445 not 1.044e+04; an exponent only below 0.001
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x, digits) for x in v)  # never a Python list's repr
    return str(v)


def drift_keys(report: dict) -> list[str]:
    keys = list(report.get("extra", {}).get("drift_keys") or [])
    if not keys and report["results"]:
        keys = [k for k, v in report["results"][0]["drift"].items() if isinstance(v, (int, float))]
    return keys




def check_status(check: dict) -> str:
    if check.get("passed") is None:
        return check.get("status") or "not measured here"
    return "pass" if check["passed"] else "FAIL"


def budget_status(budget: dict) -> str:
    checks = budget.get("checks", [])
    if not budget.get("passed"):
        return "FAIL"
    notes = sorted({"drift gate not applied" if c["name"].startswith("drift within") else "some targets not measured here"
                    for c in checks if c.get("passed") is None})
    return f"pass ({'; '.join(notes)})" if notes else "pass"


def _lat(lat: dict | None, key: str) -> str:
    return _num((lat or {}).get(key))


def _num(v) -> str:
    """Numbers for tables: no exponent for the magnitudes timings and rates have."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return _fmt(v)  # a hand-edited report may hold anything: show it, do not crash
    v = float(v)
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def _pair(lat: dict | None) -> str:
    return "–" if not isinstance(lat, dict) or lat.get("p50") is None else \
        f"{_cell_ms(lat, 'p50')} / {_cell_ms(lat, 'p99')}"


def _cell_ms(lat: dict | None, key: str) -> str:
    """A latency cell at the precision its noise allows (see xopt.stats.timing_ms)."""
    text = timing_ms(lat, key)
    return text[:-3] if text.endswith(" ms") else text


def _gate_text(r: dict) -> str:
    gate = r.get("drift_gate") or {}
    if not gate and not r.get("error"):
        return "–"  # nothing to judge by (an ONNX file without a spec): not a failure
    text = {True: "pass", None: "not applied"}.get(gate.get("passed"), "FAIL") + (
        f" ({gate['ratio_to_noise']:.1f}× noise)" if isinstance(gate.get("ratio_to_noise"), (int, float)) else "")
    return f"FAILED: {r['error']}" if r.get("error") else text


def _cv(lat: dict | None) -> str:
    cv = (lat or {}).get("cv")
    return f"{cv:.0%}" if isinstance(cv, (int, float)) and not isinstance(cv, bool) else "–"


def summary_tables(report: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """The summary as separate tables, so that model-only and end-to-end figures (each with its
    own p50/p90/p99/fps) cannot be read for one another: accuracy, model-only latency,
    end-to-end latency (when measured), memory and budget. Each is (title, head, rows)."""
    keys = drift_keys(report)
    extra = report.get("extra", {})
    gate_key = (extra.get("gate") or {}).get("key")
    higher = set(extra.get("higher_is_better") or ())
    arrows = [f"{k} {'↑' if k in higher else '↓'}" for k in keys]
    acc, model, e2e, mem = [], [], [], []
    for r in report["results"]:
        name = r["variant"]
        if r.get("error") and not r.get("drift"):
            acc.append([name, r["backend"], f"FAILED: {r['error']}"] + [""] * (len(arrows) + 2))
            continue
        d, nf = r["drift"], r.get("noise_floor") or {}
        first = gate_key or (keys[0] if keys else None)
        max_abs = max((t["max_abs"] for t in d.get("tensor", {}).values()), default=None)
        acc.append([name, r["backend"], *[_fmt(d.get(k)) for k in keys],
                    f"{first} {_fmt(nf.get(first))}" if first else "–", _fmt(max_abs), _gate_text(r)])
        lat, lat_e2e = r.get("latency_ms") or {}, r.get("latency_e2e_ms")
        model.append([name, _cell_ms(lat, "p50"), _cell_ms(lat, "p90"), _cell_ms(lat, "p99"), _num(r.get("fps")),
                      _cv(lat), _num((r.get("warmup_ms") or {}).get("first_inference"))])
        if lat_e2e:
            e2e.append([name, _cell_ms(lat_e2e, "p50"), _cell_ms(lat_e2e, "p90"), _cell_ms(lat_e2e, "p99"),
                        _num(r.get("fps_e2e")), _cv(lat_e2e)])
        m = r.get("memory") or {}
        mem.append([name, figure(round(m["peak_mb"])) if isinstance(m.get("peak_mb"), (int, float)) else "–",
                    m.get("kind", "–"), budget_status(r.get("budget") or {})])
    out = [("Accuracy: drift against the FP32 reference", ["variant", "backend", *arrows, "noise floor", "max abs",
                                                            "drift gate"], acc),
           ("Model-only latency: the graph alone", ["variant", "p50 ms", "p90 ms", "p99 ms", "fps", "CV",
                                                    "first run ms"], model)]
    if e2e:
        out.append(("End-to-end latency: pre- and post-processing included",
                    ["variant", "p50 ms", "p90 ms", "p99 ms", "fps", "CV"], e2e))
    out.append(("Memory and budget", ["variant", "peak MB", "measured as", "budget"], mem))
    return out


def summary_rows(report: dict, compact: bool = False) -> tuple[list[str], list[list[str]]]:
    """The terminal's one-table summary (`compact`) or, without it, the summary tables side by
    side (for callers that want one table); model-only and end-to-end columns say which they are."""
    if not compact:
        head, rows = ["variant"], [[r["variant"]] for r in report["results"]]
        for title, h, rs in summary_tables(report):
            group = title.split(":")[0].lower()
            head += [f"{group} {x}" for x in h[1:]]
            by = {row[0]: row[1:] for row in rs}
            for row in rows:
                row += by.get(row[0], [""] * (len(h) - 1))
        return head, rows
    keys = drift_keys(report)[:1]
    higher = set(report.get("extra", {}).get("higher_is_better") or ())
    arrows = [f"{k} {'↑' if k in higher else '↓'}" for k in keys]
    mem_head = "host MB" if report["results"] and (report["results"][0].get("memory") or {}).get("kind") == \
        "host-rss" else "VRAM MB"
    head = ["variant", "backend", *arrows, "drift gate", "model-only p50/p99 ms", "model-only fps", "CV",
            "end-to-end p50/p99 ms", "end-to-end fps", "first run ms", mem_head, "budget"]
    rows = []
    for r in report["results"]:
        if r.get("error") and not r.get("drift"):
            rows.append([r["variant"], r["backend"], f"FAILED: {r['error']}"] + [""] * (len(head) - 3))
            continue
        lat, e2e = r.get("latency_ms") or {}, r.get("latency_e2e_ms")
        mem = r.get("memory") or {}
        rows.append([r["variant"], r["backend"], *[_fmt(r["drift"].get(k)) for k in keys], _gate_text(r),
                     _pair(lat), _num(r.get("fps")), _cv(lat), _pair(e2e), _num(r.get("fps_e2e")),
                     _num((r.get("warmup_ms") or {}).get("first_inference")),
                     figure(round(mem["peak_mb"])) if isinstance(mem.get("peak_mb"), (int, float)) else "–",
                     budget_status(r.get("budget") or {})])
    return head, rows


def noisy_timings(report: dict) -> str | None:
    """The busy-machine warning, when any variant's timings vary by more than NOISY_CV."""
    cvs = [(r.get("latency_ms") or {}).get("cv") for r in report.get("results", [])]
    worst = max((c for c in cvs if isinstance(c, (int, float)) and not isinstance(c, bool)), default=0.0)
    if worst > NOISY_CV:
        return (f"the machine was busy; these timings are noisy (coefficient of variation up to {worst:.0%}, "
                f"more than {NOISY_CV:.0%}): re-run on an idle machine before comparing speeds")
    return None


def shape_line(report: dict) -> str:
    st = report.get("settings", {})
    size = st.get("input_size") or {}
    shapes = ", ".join(f"{k} {'x'.join(str(d) for d in v)}" for k, v in (st.get("inputs") or {}).items())
    thr = st.get("threads") or {}
    return (f"inputs: {size.get('text') + ' — ' if size.get('text') else ''}{shapes or '?'}; "
            f"threads: intra-op {thr.get('intra_op', '?')}, inter-op {thr.get('inter_op', '?')}; "
            f"{st.get('frames')} timed frames after {st.get('warmup_runs', 1)} warm-up run(s)")


def _md_table(head, rows) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def setting_value(v) -> str:
    """A settings value as a reader writes it: 1x3x512x512, 'intra-op 2, inter-op 1', 10,445."""
    if isinstance(v, dict):
        if isinstance(v.get("text"), str):  # a described value (the input size): its description
            return v["text"]
        return ", ".join(f"{str(k).replace('_', '-')} {setting_value(x)}" for k, x in v.items()
                         if x not in (None, "", {}, []))
    if isinstance(v, (list, tuple)):
        if v and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            return "x".join(str(x) for x in v)
        return ", ".join(setting_value(x) for x in v)
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)  # sizes and counts: 4320 px, as the flags take them
    return _fmt(v)


def settings_text(settings: dict) -> str:
    """The settings line of a report: `name: value` pairs separated by `; `, no Python dicts."""
    return "; ".join(f"{str(k).replace('_', ' ')}: {setting_value(v)}" for k, v in (settings or {}).items()
                     if v not in (None, "", {}, []))


def _provenance(report: dict) -> list[str]:
    m, w, p = report["machine"], report["weights"], report.get("profile", {})
    gpus = ", ".join(f"{g['name']} (driver {g['driver']})" for g in m.get("gpus", [])) or "none"
    vers = ", ".join(f"{k} {v}" for k, v in sorted(m.get("versions", {}).items()))
    weights = w.get("kind", "?") + (f", seed {w['seed']}" if w.get("seed") is not None else "") + \
        (f", {w.get('path')} sha256 {str(w.get('sha256'))[:12]}" if w.get("kind") == "checkpoint" else "")
    return [f"- **weights**: {weights}" + (" — numbers describe random weights, not a trained model"
                                           if w.get("kind") == "seeded-random" else ""),
            f"- **machine**: {m.get('cpu')} ({m.get('cpu_count')} cores, {megabytes(m.get('ram_mb'))} RAM); "
            f"GPU: {gpus}",
            f"- **versions**: {vers}",
            f"- **device profile**: {p.get('name')} ({p.get('description', '')}), "
            f"budget {megabytes(p.get('budget_mb'))}",
            f"- **settings**: {settings_text(report.get('settings', {}))}",
            *([f"- **measured**: {shape_line(report)}"] if report["kind"] == "profile" else []),
            f"- **reproduce**: `{report.get('command', '')}`"]


def render_markdown(report: dict) -> str:
    validate(report)
    from xopt.analysis.previews import markdown as preview_md, md_text
    from xopt.analysis.verdict_lines import verdict_lines

    out = [f"# xopt {report['kind']} report: {report['model']}", "", f"_{report.get('created', '')}_", ""]
    lines = verdict_lines(report)
    if lines:
        ship = len(lines) - 1 if report["kind"] == "profile" else None
        out += ["## Verdict", ""] + [f"- {'**' if i == ship else ''}{md_text(x)}{'**' if i == ship else ''}"
                                     for i, x in enumerate(lines)] + [""]
    out += _provenance(report) + ["", "Charts: report.html beside this file (self-contained, works offline).", ""]
    if report["kind"] == "profile":
        noisy = noisy_timings(report)
        out += ["## Summary", "", *([f"> ⚠ {noisy}", ""] if noisy else [])]
        for title, head, rows in summary_tables(report):
            out += [f"### {title}", "", _md_table(head, rows), ""]
        out += ["## Budget checks", ""]
        for r in report["results"]:
            if r.get("error") and not r.get("drift"):
                continue
            out.append(f"**{r['variant']}** ({r['backend']}):")
            mark = {"pass": "✅", "FAIL": "❌"}
            out += [f"- {mark.get(check_status(c), '➖')} {c['name']}: {_fmt(c['value'])} vs {_fmt(c['limit'])} "
                    f"{c['unit']}" + ("" if c.get("passed") is not None else f" — {check_status(c)}")
                    for c in r["budget"]["checks"]]
            out.append("")
        if report.get("settings", {}).get("generic"):
            from xopt.analysis.generic import breakdown_markdown

            out += ["## Per-node time (ONNX Runtime profiler)", ""]
            for r in report["results"]:
                out += breakdown_markdown(r)
        else:
            out += ["Noise floor: the FP32 model's own drift when every input value moves by ±1 quantum. Drift "
                    "well below it is indistinguishable from noise; drift far above it is real.", ""]
        out += preview_md(report)
    if report["kind"] in ("fit", "bench"):  # the table report.html draws its charts beside
        title, head, rows = kind_table(report)
        if head:
            out += [f"## {md_text(title)}", "", _md_table(head, [[md_text(c) for c in row] for row in rows]), ""]
    for key, section in report.get("extra", {}).items():
        if isinstance(section, dict) and section.get("markdown"):
            out += [f"## {key}", "", section["markdown"], ""]
    return "\n".join(out)


def report_paths(out_dir: str | Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    return {"json": out_dir / "report.json", "md": out_dir / "report.md", "html": out_dir / "report.html"}


def refuse_existing(out_dir: str | Path, force: bool, extra: tuple[str, ...] = ()) -> None:
    """Raise OutputExistsError for a report file in `out_dir` that xopt did not write (unless
    `force`); commands call it after validating their arguments and before the work."""
    from xopt.errors import OutputExistsError, UserError

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir} is a file", "pass a directory to --out")
    if force:
        return
    for p in [*report_paths(out_dir).values(), *(out_dir / name for name in extra)]:
        if p.exists() and not ours(p):
            raise OutputExistsError(p)


def write_reports(report: dict, out_dir: str | Path, force: bool = False,
                  also: dict[str, str] | None = None, previews_dir: str | Path | None = None) -> dict[str, Path]:
    """report.json, then report.md and report.html rendered from it (and `also`: name -> text,
    e.g. the third-party log; the preview files profile_model staged in `previews_dir`, copied
    beside it), recording what was written so a re-run may replace it."""
    from xopt.analysis import previews
    from xopt.analysis.report_html import render_html
    from xopt.report_schema import public
    from xopt.written import record

    validate(report)
    report = public(report)
    out_dir = Path(out_dir)
    paths = report_paths(out_dir)
    if previews_dir:
        previews.dedupe(report, previews_dir)
    refuse_existing(out_dir, force, tuple(also or ()) + tuple(previews.files(report)))
    copied = previews.copy_into(report, previews_dir, out_dir) if previews_dir else []
    # JSON first: the renderings are derived from it.
    write_json(paths["json"], report, force=True)
    write_text(paths["md"], render_markdown(report), force=True)
    write_text(paths["html"], render_html(report, out_dir), force=True)
    for name, text in (also or {}).items():
        paths[name] = out_dir / name
        write_text(paths[name], text, force=True)
    record([*paths.values(), *copied])  # preview files: a record in their own folder, so `ours` reads it
    return paths


def print_summary(report: dict, console=None) -> None:
    """The terminal summary (analysis/terminal.py)."""
    from xopt.analysis.terminal import print_summary as show

    show(report, console)


def print_table(title, head, rows, console=None) -> None:
    """A table readable in any width (analysis/terminal.py)."""
    from xopt.analysis.terminal import print_table as show

    show(title, head, rows, console)


def say(console, text: str, style: str | None = None, indent: str = "  ") -> None:
    """One wrapped paragraph with a hanging indent (analysis/terminal.py)."""
    from xopt.analysis.terminal import say as show

    show(console, text, style, indent)


def kind_table(report: dict) -> tuple[str, list, list]:
    """(title, head, rows): the one table a fit or bench report holds, for `xopt report`."""
    if report["kind"] == "fit":
        fit = report.get("extra", {}).get("fit") or {"head": [], "rows": []}
        return f"{report['model']}: fit to {report.get('profile', {}).get('name', '?')}", fit["head"], fit["rows"]
    return str(report.get("title") or f"{report['model']} bench"), report.get("head", []), report.get("rows", [])


def comparison(reports: Sequence[dict], labels: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """One row per (report, variant) with columns every model shares, for `xopt report A.json B.json`."""
    head = ["report", "model", "variant", "backend", "weights", "drift", "max abs", "p50 ms", "p99 ms", "fps",
            "memory MB", "budget", "machine"]
    rows = []
    for rep, label in zip(reports, labels):
        validate(rep, label)
        if rep["kind"] != "profile":
            from xopt.errors import UserError

            raise UserError(f"{label} is a {rep['kind']} report, and only profile reports are compared",
                            "pass report.json files written by xopt profile (or one report to print it)")
        keys = drift_keys(rep)
        for r in rep["results"]:
            if r.get("error"):
                rows.append([label, rep["model"], r["variant"], r["backend"], rep["weights"].get("kind", "?"),
                             f"FAILED: {r['error']}"] + [""] * 7)
                continue
            d = r["drift"]
            max_abs = max((t["max_abs"] for t in d.get("tensor", {}).values()), default=None)
            lat = r["latency_ms"]
            rows.append([label, rep["model"], r["variant"], r["backend"], rep["weights"].get("kind", "?"),
                         f"{keys[0]}={_fmt(d.get(keys[0]))}" if keys else "–", _fmt(max_abs), _fmt(lat.get("p50")),
                         _fmt(lat.get("p99")), _fmt(r.get("fps_e2e") or r.get("fps")), _fmt(r["memory"]["peak_mb"]),
                         "pass" if r["budget"]["passed"] else "FAIL", rep["machine"].get("cpu", "?")[:32]])
    return head, rows
