"""Render report.json into Markdown, HTML (with inline SVG charts) and terminal tables.

The JSON is the record; everything here is derived from it and nothing else.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from xopt.atomic import write_json, write_text
from xopt.report_schema import validate


def _fmt(v, digits=4) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def drift_keys(report: dict) -> list[str]:
    keys = list(report.get("extra", {}).get("drift_keys") or [])
    if not keys and report["results"]:
        keys = [k for k, v in report["results"][0]["drift"].items() if isinstance(v, (int, float))]
    return keys


def summary_rows(report: dict, compact: bool = False) -> tuple[list[str], list[list[str]]]:
    """The summary table; `compact` (terminal) keeps the two leading drift terms only."""
    keys = drift_keys(report)[:2] if compact else drift_keys(report)
    head = ["variant", "backend", *keys, "noise floor", "max abs", "p50 ms", "p99 ms", "fps", "first ms",
            "memory MB", "budget"]
    if compact:
        head[-2] = "host MB" if report["results"] and report["results"][0]["memory"]["kind"] == "host-rss" else "VRAM MB"
    rows = []
    for r in report["results"]:
        if r.get("error"):
            rows.append([r["variant"], r["backend"], f"FAILED: {r['error']}"] + [""] * (len(head) - 3))
            continue
        d, nf = r["drift"], r.get("noise_floor") or {}
        first = keys[0] if keys else None
        max_abs = max((t["max_abs"] for t in d.get("tensor", {}).values()), default=None)
        lat = r["latency_ms"]
        rows.append([r["variant"], r["backend"], *[_fmt(d.get(k)) for k in keys],
                     f"{first}={_fmt(nf.get(first))}" if first else "–", _fmt(max_abs), _fmt(lat.get("p50")),
                     _fmt(lat.get("p99")), _fmt(r.get("fps_e2e") or r.get("fps")),
                     _fmt(r["warmup_ms"].get("first_inference")),
                     f"{_fmt(r['memory']['peak_mb'])} ({r['memory']['kind']})" if not compact
                     else _fmt(r["memory"]["peak_mb"]),
                     "pass" if r["budget"]["passed"] else "FAIL"])
    return head, rows


def _md_table(head, rows) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _provenance(report: dict) -> list[str]:
    m, w, p = report["machine"], report["weights"], report.get("profile", {})
    gpus = ", ".join(f"{g['name']} (driver {g['driver']})" for g in m.get("gpus", [])) or "none"
    vers = ", ".join(f"{k} {v}" for k, v in sorted(m.get("versions", {}).items()))
    weights = w.get("kind", "?") + (f", seed {w['seed']}" if w.get("seed") is not None else "") + \
        (f", {w.get('path')} sha256 {str(w.get('sha256'))[:12]}" if w.get("kind") == "checkpoint" else "")
    return [f"- **weights**: {weights}" + (" — numbers describe random weights, not a trained model"
                                           if w.get("kind") == "seeded-random" else ""),
            f"- **machine**: {m.get('cpu')} ({m.get('cpu_count')} cores, {m.get('ram_mb')} MB RAM); GPU: {gpus}",
            f"- **versions**: {vers}",
            f"- **device profile**: {p.get('name')} ({p.get('description', '')}), budget {_fmt(p.get('budget_mb'))} MB",
            f"- **settings**: {', '.join(f'{k}={v}' for k, v in report.get('settings', {}).items())}",
            f"- **reproduce**: `{report.get('command', '')}`"]


def render_markdown(report: dict) -> str:
    validate(report)
    out = [f"# xopt {report['kind']} report: {report['model']}", "", f"_{report.get('created', '')}_", ""]
    out += _provenance(report) + [""]
    if report["kind"] == "profile":
        out += ["## Summary", "", _md_table(*summary_rows(report)), ""]
        out += ["## Budget checks", ""]
        for r in report["results"]:
            if r.get("error"):
                continue
            out.append(f"**{r['variant']}** ({r['backend']}):")
            out += [f"- {'✅' if c['passed'] else '❌'} {c['name']}: {_fmt(c['value'])} vs {_fmt(c['limit'])} {c['unit']}"
                    for c in r["budget"]["checks"]]
            out.append("")
        out += ["Noise floor: the FP32 model's own drift when every input value moves by ±1 quantum. Drift well "
                "below it is indistinguishable from noise; drift far above it is real.", ""]
    for key, section in report.get("extra", {}).items():
        if isinstance(section, dict) and section.get("markdown"):
            out += [f"## {key}", "", section["markdown"], ""]
    return "\n".join(out)


def report_paths(out_dir: str | Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    return {"json": out_dir / "report.json", "md": out_dir / "report.md", "html": out_dir / "report.html"}


def refuse_existing(out_dir: str | Path, force: bool) -> None:
    """Raise OutputExistsError for any report file already in `out_dir` (unless `force`);
    commands call it before the work, so a refusal costs nothing."""
    from xopt.errors import OutputExistsError, UserError

    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise UserError(f"{out_dir} is a file", "pass a directory to --out")
    if force:
        return

    for p in report_paths(out_dir).values():
        if p.exists():
            raise OutputExistsError(p)


def write_reports(report: dict, out_dir: str | Path, force: bool = False) -> dict[str, Path]:
    from xopt.analysis.report_html import render_html

    validate(report)
    paths = report_paths(out_dir)
    refuse_existing(out_dir, force)
    # JSON first: the renderings are derived from it.
    write_json(paths["json"], report, force=True)
    write_text(paths["md"], render_markdown(report), force=True)
    write_text(paths["html"], render_html(report), force=True)
    return paths


def print_summary(report: dict, console=None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    head, rows = summary_rows(report, compact=True)
    w = report["weights"]
    table = Table(title=escape(f"{report['model']} on {report['settings'].get('backend')} — weights: {w.get('kind')}"
                               f" — profile {report['profile']['name']}"))
    for h in head:
        table.add_column(escape(h), overflow="fold")
    for row in rows:
        table.add_row(*[escape(str(c)) for c in row])
    console.print(table)


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
