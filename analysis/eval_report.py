"""Render an eval report (kind "eval") as Markdown, HTML and a terminal table; JSON is the record.

Rows: FP32 first, then each variant with its aggregate metrics and, beside each, its change
against FP32 (the accuracy the optimisation costs), then the speed it ran at on the same items.
"""
from __future__ import annotations

from pathlib import Path

from xopt.atomic import write_json, write_text
from xopt.report_schema import validate


def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _signed(v) -> str:
    return "–" if v is None else f"{v:+.3g}"


def metric_keys(report: dict) -> list[str]:
    present = set()
    for r in report["results"]:
        present |= set(r.get("aggregate") or {})
    return [m["key"] for m in report.get("metrics", []) if m["key"] in present]


def _better(report: dict) -> dict[str, str]:
    return {m["key"]: m["better"] for m in report.get("metrics", [])}


WORSE_SHARE = 1e-3  # "worse" marks a change beyond 0.1 % of the FP32 value (smaller is float noise)


def _cell(r: dict, key: str, better: str) -> str:
    v = (r.get("aggregate") or {}).get(key)
    d = (r.get("delta") or {}).get(key)
    if d is None or v is None:
        return _fmt(v)
    worse = (d < 0 if better == "higher" else d > 0) and abs(d) > WORSE_SHARE * max(abs(v - d), 1e-12)
    return f"{_fmt(v)} ({_signed(d)}{', worse' if worse else ''})"


def summary_rows(report: dict, compact: bool = False) -> tuple[list[str], list[list[str]]]:
    """The summary table; `compact` (the terminal) keeps the four leading metrics."""
    keys, better = metric_keys(report), _better(report)
    keys = keys[:4] if compact else keys
    arrows = {"higher": "↑", "lower": "↓"}
    speed_head = "× real time" if any((r.get("speed") or {}).get("real_time_factor") for r in report["results"]) \
        else "items/s"
    head = ["variant", "backend", *[f"{k} {arrows.get(better.get(k), '')}".strip() for k in keys],
            "s/item p50", speed_head, "load s", "memory MB", "warnings"]
    rows = []
    for r in report["results"]:
        if r.get("error"):
            rows.append([r["variant"], r["backend"], f"FAILED: {r['error']}"] + [""] * (len(head) - 3))
            continue
        s, mem = r.get("speed") or {}, r.get("memory") or {}
        fast = s.get("real_time_factor") if speed_head != "items/s" else s.get("items_per_s")
        rows.append([r["variant"], r["backend"], *[_cell(r, k, better.get(k, "")) for k in keys],
                     _fmt((s.get("seconds_per_item") or {}).get("p50")), _fmt(fast), _fmt(s.get("load_s"), 3),
                     f"{_fmt(mem.get('peak_mb'))} ({mem.get('kind')})" if mem else "–",
                     str(sum(len(w["items"]) for w in r.get("warnings", [])))])
    return head, rows


def item_rows(report: dict, result: dict) -> tuple[list[str], list[list[str]]]:
    keys = [k for k in metric_keys(report) if any(k in i["metrics"] for i in result["items"])]
    head = ["item", *keys, "seconds", "warnings", "notes"]
    rows = [[i["name"], *[_fmt(i["metrics"].get(k)) for k in keys], _fmt(i.get("seconds"), 3),
             "; ".join(c["name"] for c in i.get("checks", []) if not c.get("ok", True)) or "–",
             "; ".join(i.get("notes", [])) or "–"] for i in result["items"]]
    return head, rows


def warning_lines(report: dict) -> list[str]:
    """One line per failed check and result: how many items, and the likely cause."""
    out = []
    for r in report["results"]:
        for w in r.get("warnings", []):
            n, total = len(w["items"]), len(r["items"])
            where = w["items"][0] if n == 1 else f"{n}/{total} items"
            out.append(f"{r['variant']}: {w['check']} on {where}: {w['message']}")
    return out


def _md_table(head, rows) -> str:
    esc = [[str(c).replace("|", "\\|") for c in row] for row in rows]
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |"
                                                                               for r in esc])


def _provenance(report: dict) -> list[str]:
    from xopt.analysis.report import settings_text
    from xopt.stats import megabytes

    m, w, s = report["machine"], report["weights"], report.get("settings", {})
    weights = w.get("kind", "?") + (f", seed {w['seed']}" if w.get("seed") is not None else "") + \
        (f", {w.get('path')}" if w.get("path") else "") + (f" — {w['note']}" if w.get("note") else "")
    if w.get("kind") == "seeded-random":
        weights += " — numbers describe random weights, not a trained model"
    vers = ", ".join(f"{k} {v}" for k, v in sorted(m.get("versions", {}).items()))
    gpus = ", ".join(g["name"] for g in m.get("gpus", [])) or "none"
    return [f"- **weights**: {weights}",
            f"- **machine**: {m.get('cpu')} ({m.get('cpu_count')} cores, {megabytes(m.get('ram_mb'))} RAM); "
            f"GPU: {gpus}",
            f"- **versions**: {vers}",
            f"- **settings**: {settings_text(s)}",
            f"- **reproduce**: `{report.get('command', '')}`"]


def render_markdown(report: dict) -> str:
    validate(report)
    d = report["dataset"]
    out = [f"# xopt eval report: {report['model']}", "", f"_{report.get('created', '')}_", ""]
    out += _provenance(report) + ["", "## Dataset", "", f"- **layout**: {d['layout']}",
                                  f"- **items**: {len(d['items'])}"]
    out += [f"- **metrics**: {d['method']}"] if d.get("method") else []
    out += [f"- note: {n}" for n in d.get("notes", [])] + ["", "## Summary", "", _md_table(*summary_rows(report)), ""]
    out += ["Each variant's change against FP32 is in brackets (↑: higher is better, ↓: lower is better; \"worse\" "
            "beyond 0.1 % of the FP32 value); speed is end to end through the model's pipeline on the same items "
            "(pre/post-processing included).", ""]
    lines = warning_lines(report)
    if lines:
        out += ["## Label-free checks that failed", ""] + [f"- {line}" for line in lines] + [""]
    for r in report["results"]:
        if r.get("error") or not r["items"]:
            continue
        out += [f"## Per item: {r['variant']}", "", _md_table(*item_rows(report, r)), ""]
    return "\n".join(out)


def render_html(report: dict) -> str:
    """The shared report page (analysis/report_html.py): verdict, dataset, summary, Plotly charts
    of each metric with its direction, failed checks and the per-item tables."""
    from xopt.analysis.report_html import render_html as page

    return page(report)


def write_eval_reports(report: dict, out_dir: str | Path, force: bool = False) -> dict[str, Path]:
    from xopt.analysis.report import refuse_existing, report_paths

    validate(report)
    paths = report_paths(out_dir)
    refuse_existing(out_dir, force)
    write_json(paths["json"], report, force=True)  # the record first; the renderings derive from it
    write_text(paths["md"], render_markdown(report), force=True)
    write_text(paths["html"], render_html(report), force=True)
    _record_written(Path(out_dir), paths)
    return paths


def _record_written(out_dir: Path, paths: dict[str, Path]) -> None:
    """Record the files' sha256 (xopt.written), so a re-run may replace what xopt wrote and
    refuses what it did not."""
    from xopt.written import record

    record(paths.values())


def print_summary(report: dict, console=None) -> None:
    from rich.console import Console
    from rich.markup import escape

    from xopt.analysis.report import print_table

    console = console or Console()
    head, rows = summary_rows(report, compact=True)
    print_table(f"{report['model']} against ground truth — {len(report['dataset']['items'])} items — "
                f"weights: {report['weights'].get('kind')}", head, rows, console)
    for note in report["dataset"].get("notes", []):
        console.print(escape(f"note: {note}"))
    if len(metric_keys(report)) > 4:
        console.print(escape(f"all metrics, per item: report.md ({', '.join(metric_keys(report)[4:])} not shown)"))
