"""report.html: the Markdown content as a standalone page plus latency and drift charts."""
from __future__ import annotations

from html import escape

from xopt.analysis import svg
from xopt.analysis.report import _provenance, drift_keys, summary_rows

_CSS = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
        "th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.fail{color:#b00}.pass{color:#070}"
        ".warn{background:#fff4d6;border:1px solid #e6c06a;padding:6px 10px}")


def _table(head, rows) -> str:
    out = ["<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"]
    for row in rows:
        cells = []
        for c in row:
            cls = ' class="fail"' if str(c).startswith(("FAIL", "FAILED")) else (' class="pass"' if c == "pass" else "")
            cells.append(f"<td{cls}>{escape(str(c))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "".join(out) + "</table>"


def _md_inline(line: str) -> str:
    text = escape(line.lstrip("- "))
    while "**" in text:
        text = text.replace("**", "<b>", 1).replace("**", "</b>", 1)
    while "`" in text:
        text = text.replace("`", "<code>", 1).replace("`", "</code>", 1)
    return f"<li>{text}</li>"


def _number(v) -> float:
    """A drift term as a bar height; a term that is not a number (None, a per-stem table) is a gap."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else float("nan")


def _profile_charts(report: dict) -> list[str]:
    ok = [r for r in report["results"] if not r.get("error")]
    lat = {f"{r['variant']} ({r['backend']})": r["latency_ms"].get("samples", []) for r in ok}
    parts = ["<h2>Latency distribution</h2>", svg.strip_plot("model-only latency per frame", lat, "ms")]
    e2e = {f"{r['variant']}": (r.get("latency_e2e_ms") or {}).get("samples", []) for r in ok}
    if any(e2e.values()):
        parts.append(svg.strip_plot("end-to-end latency (pre/post-processing included)", e2e, "ms"))
    keys = drift_keys(report)
    parts.append("<h2>Drift against FP32</h2>")
    for key in keys[:3]:
        bars = {r["variant"]: _number(r["drift"].get(key)) for r in ok}
        floor = _number((ok[0].get("noise_floor") or {}).get(key)) if ok else float("nan")
        floor = floor if floor == floor else None
        parts.append(svg.bar_chart(f"{key} vs FP32 baseline", bars, key, floor, "noise floor (±1 input quantum)"))
    return parts


def _curve(report: dict) -> list[str]:
    curve = (report.get("extra") or {}).get("curve")
    if not curve:
        return []
    lines: dict[str, list] = {}
    for p in curve:
        lines.setdefault(p["variant"], []).append((p["n"], p["peak_mb"]))
    budget = (report.get("profile") or {}).get("budget_mb")
    return ["<h2>Memory curve</h2>",
            svg.line_chart("peak memory vs size (measured and fitted)", lines, "size", "MB", budget, "budget")]


def render_html(report: dict) -> str:
    title = f"xopt {report['kind']} report: {report['model']}"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{escape(title)}</h1><p><i>{escape(report.get('created', ''))}</i></p>"]
    if report["weights"].get("kind") == "seeded-random":
        parts.append("<p class='warn'><b>weights: seeded-random</b>: these numbers describe randomly initialised "
                     "weights, not a trained model.</p>")
    parts.append("<ul>" + "".join(_md_inline(line) for line in _provenance(report)) + "</ul>")
    if report["kind"] == "profile":
        parts += ["<h2>Summary</h2>", _table(*summary_rows(report))]
        parts += _profile_charts(report)
        parts.append("<h2>Budget checks</h2>")
        for r in report["results"]:
            if r.get("error"):
                continue
            rows = [[c["name"], "pass" if c["passed"] else "FAIL", str(c["value"]), str(c["limit"]), c["unit"]]
                    for c in r["budget"]["checks"]]
            parts += [f"<h3>{escape(r['variant'])} ({escape(r['backend'])})</h3>",
                      _table(["check", "result", "value", "limit", "unit"], rows)]
    parts += _curve(report)
    for key, section in (report.get("extra") or {}).items():
        if isinstance(section, dict) and section.get("rows"):
            parts += [f"<h2>{escape(key)}</h2>", _table(section["head"], section["rows"])]
    parts.append("</body></html>")
    return "\n".join(parts)
