"""report.html: one self-contained page per report (any kind) and for `xopt report OLD NEW`.

The verdict first, then the summary, the charts (Plotly, its JavaScript embedded once), the
model's own outputs (analysis/preview_html.py), the checks and the provenance. Nothing is
loaded from the network; every string from the report is HTML-escaped.
"""
from __future__ import annotations

from html import escape
from pathlib import Path

from xopt.analysis import html_assets
from xopt.analysis.verdict_lines import verdict_lines

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1400px;margin:1.5em auto;padding:0 1.2em;
color:#1f2328;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.1em}h2{margin-top:1.8em;border-bottom:1px solid #d0d7de;padding-bottom:.2em}
table{border-collapse:collapse;font-size:13px;margin:.4em 0}td,th{border:1px solid #d0d7de;padding:3px 7px;
text-align:right;vertical-align:top}th{background:#f6f8fa}td:first-child,th:first-child{text-align:left}
.fail{color:#b3261e;font-weight:600}.pass{color:#1a7f37}.na{color:#6e7781}
.warn{background:#fff8c5;border:1px solid #d4a72c;padding:6px 10px;border-radius:6px}
.verdict{background:#f6f8fa;border:1px solid #d0d7de;border-radius:8px;padding:.6em 1.2em;margin:1em 0}
.verdict li{margin:.25em 0}.verdict li.ship{font-weight:600;list-style:'➜ ';margin-top:.6em}
.verdict li.bad{color:#b3261e}.meta{color:#57606a;font-size:13px}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:10px}
.plot{border:1px solid #eaeef2;border-radius:6px;min-height:140px;min-width:0}.plot.wide{grid-column:1/-1}
table.previews td,table.previews th{text-align:center;vertical-align:top;border:none;padding:4px}
table.previews th{background:none;text-align:left;white-space:nowrap;padding-top:2em}
figure{margin:0;display:inline-block;max-width:340px}figure img{max-width:320px;image-rendering:auto;
border:1px solid #eaeef2}figcaption{font-size:12px;color:#57606a;max-width:320px}
figure.series{max-width:none;width:560px}figure.audio audio{width:300px;display:block}
.mol{width:380px;height:320px;position:relative;border:1px solid #eaeef2}figure.structure{max-width:400px}
code{background:#f6f8fa;padding:1px 4px;border-radius:4px;font-size:12px;word-break:break-all}
.note{color:#57606a;font-size:13px}.scroll{overflow-x:auto}
"""


def _table(head, rows, cls: str = "") -> str:
    attr = f" class='{cls}'" if cls else ""
    out = [f"<div class='scroll'><table{attr}><tr>" + "".join(f"<th>{escape(str(h))}</th>" for h in head) + "</tr>"]
    for row in rows:
        cells = []
        for c in row:
            text = str(c)
            k = "fail" if text.startswith(("FAIL", "FAILED", "worse")) else "pass" if text in ("pass", "better") \
                else "na" if text.startswith("not measured") else ""
            cells.append(f"<td class='{k}'>{escape(text)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "".join(out) + "</table></div>"


def _inline_md(line: str) -> str:
    """A provenance bullet (`**bold**`, `code`) as HTML, escaped first."""
    text = escape(line[2:] if line.startswith("- ") else line)
    for mark, tag in (("**", "b"), ("`", "code")):
        while text.count(mark) >= 2:
            text = text.replace(mark, f"<{tag}>", 1).replace(mark, f"</{tag}>", 1)
    return f"<li>{text}</li>"


def verdict_block(report: dict) -> str:
    lines = verdict_lines(report)
    if not lines:
        return ""
    items = []
    for i, line in enumerate(lines):
        ship = report.get("kind") == "profile" and i == len(lines) - 1
        bad = "FAIL" in line or "fails its drift gate" in line or "OVER the" in line
        items.append(f"<li class='{'ship' if ship else 'bad' if bad else ''}'>{escape(line)}</li>")
    return "<div class='verdict'><h2 style='border:none;margin:.2em 0'>Verdict</h2><ul>" + "".join(items) + \
        "</ul></div>"


class Page:
    def __init__(self, title: str):
        self.title, self.body, self.figs = title, [], 0
        self.three_dmol = self.no_plotly = False

    def add(self, html: str) -> None:
        if html:
            self.body.append(html)

    def figure(self, fig) -> str:
        self.figs += 1
        height = fig.layout.height or 360
        div = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"plot-{self.figs}",
                          default_width="100%", default_height=f"{height}px",
                          config={"displaylogo": False, "responsive": True})
        wide = " wide" if (fig.layout.meta or {}).get("wide") else ""
        return f"<div class='plot{wide}' data-plot='{self.figs}'>{div}</div>"

    def plots(self, build, *args) -> None:
        """The figures `build(*args)` makes, in a grid; without plotly, a note naming the extra."""
        try:
            figs = build(*args)
        except ImportError as exc:
            if "plotly" not in str(exc):
                raise
            if not self.no_plotly:
                self.no_plotly = True
                self.add("<p class='warn'>Charts need plotly: <code>pip install 'xopt[report]'</code>, then "
                         "<code>xopt report report.json --out DIR</code> renders them from this report.</p>")
            return
        if figs:
            self.add("<div class='plots'>" + "".join(self.figure(f) for f in figs) + "</div>")

    def html(self) -> str:
        libs = [html_assets.script(html_assets.plotly_js())] if self.figs else []
        if self.three_dmol:
            libs.append(html_assets.script(html_assets.threedmol_js()))
        credits = ([f"plots: plotly.js (Plotly {html_assets.plotly_version()})"] if self.figs else []) + \
            ([f"structures: 3Dmol.js {html_assets.THREEDMOL['version']}"] if self.three_dmol else [])
        foot = f"<p class='note'>Self-contained: {', '.join(credits)} embedded; nothing loads from the network.</p>" \
            if credits else ""
        return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
                "<meta name='viewport' content='width=device-width,initial-scale=1'>"
                f"<title>{escape(self.title)}</title><style>{CSS}</style>{''.join(libs)}</head><body>"
                + "\n".join(self.body) + foot + "</body></html>")


def _header(page: Page, report: dict) -> None:
    from xopt.analysis.report import shape_line

    page.add(f"<h1>{escape(page.title)}</h1><p class='meta'>{escape(str(report.get('created', '')))}"
             + (f" · {escape(shape_line(report))}" if report.get("kind") == "profile" else "") + "</p>")
    if (report.get("weights") or {}).get("kind") == "seeded-random":
        page.add("<p class='warn'><b>weights: seeded-random</b> — these numbers and pictures describe randomly "
                 "initialised weights, not a trained model.</p>")
    page.add(verdict_block(report))


def _provenance(page: Page, report: dict) -> None:
    if report.get("kind") == "eval":
        from xopt.analysis.eval_report import _provenance as lines
    else:
        from xopt.analysis.report import _provenance as lines

    page.add("<h2>How this was measured</h2><ul>" + "".join(_inline_md(x) for x in lines(report)) + "</ul>")


def _profile(page: Page, report: dict, base_dir: Path | None) -> None:
    from xopt.analysis import plots, preview_html
    from xopt.analysis.report import _fmt, check_status, noisy_timings, summary_tables

    noisy = noisy_timings(report)
    page.add("<h2>Summary</h2>" + (f"<p class='warn'>⚠ {escape(noisy)}</p>" if noisy else "")
             + "".join(f"<h3>{escape(t)}</h3>" + _table(h, rows) for t, h, rows in summary_tables(report))
             + "<p class='note'>↑: higher is better, ↓: lower is better. Drift is "
             "against the FP32 model on the same inputs; the noise floor is the FP32 model's own drift when every "
             "input value moves by ±1 quantum.</p>")
    page.add("<h2>Charts</h2>")
    page.plots(plots.profile_figures, report)
    html, emb = preview_html.section(report, base_dir)
    for i, fig in enumerate(emb.series):
        html = html.replace(f"<!--series:{i}-->", page.figure(fig))
    page.add(html)
    if emb.structures:
        page.three_dmol = True
        page.add(preview_html.structure_script(emb))
    page.add("<h2>Budget checks</h2>")
    for r in report["results"]:
        if r.get("error") and not r.get("drift"):
            page.add(f"<p class='fail'>{escape(r['variant'])}: {escape(r['error'])}</p>")
            continue
        rows = [[c["name"], check_status(c), _fmt(c.get("value")), _fmt(c.get("limit")), c.get("unit", "")]
                for c in r["budget"]["checks"]]
        page.add(f"<h3>{escape(r['variant'])} ({escape(r['backend'])})</h3>"
                 + _table(["check", "result", "value", "limit", "unit"], rows))


def _kind_sections(page: Page, report: dict) -> None:
    from xopt.analysis import plots_kinds
    from xopt.analysis.report import kind_table

    kind = report["kind"]
    if kind in ("fit", "bench"):
        title, head, rows = kind_table(report)
        page.add(f"<h2>{escape(str(title))}</h2>" + _table(head, rows))
        page.plots(plots_kinds.fit if kind == "fit" else plots_kinds.bench, report)
    elif kind == "eval":
        from xopt.analysis import eval_report as ev

        d = report["dataset"]
        facts = [f"layout: {d['layout']}", f"items: {len(d['items'])}"] + \
            ([f"metrics: {d['method']}"] if d.get("method") else []) + [f"note: {n}" for n in d.get("notes", [])]
        page.add("<h2>Dataset</h2><ul>" + "".join(f"<li>{escape(str(f))}</li>" for f in facts) + "</ul>")
        page.add("<h2>Summary</h2>" + _table(*ev.summary_rows(report)))
        page.plots(plots_kinds.eval_, report)
        warnings = ev.warning_lines(report)
        if warnings:
            page.add("<h2>Label-free checks that failed</h2><ul>"
                     + "".join(f"<li>{escape(w)}</li>" for w in warnings) + "</ul>")
        for r in report["results"]:
            if not r.get("error") and r.get("items"):
                page.add(f"<h2>Per item: {escape(r['variant'])}</h2>" + _table(*ev.item_rows(report, r)))
    elif kind == "sweep":
        page.plots(plots_kinds.sweep, report)


def render_html(report: dict, base_dir: str | Path | None = None) -> str:
    """The page for one report; `base_dir` is where its preview files lie (the report folder)."""
    from xopt.report_schema import validate

    validate(report)
    page = Page(f"xopt {report['kind']} report: {report['model']}")
    _header(page, report)
    if report["kind"] == "profile":
        _profile(page, report, Path(base_dir) if base_dir else None)
    else:
        _kind_sections(page, report)
    for key, section in (report.get("extra") or {}).items():
        if isinstance(section, dict) and section.get("head") and isinstance(section.get("rows"), list) \
                and key != "fit":
            page.add(f"<h2>{escape(str(key))}</h2>" + _table(section["head"], section["rows"]))
    _provenance(page, report)
    return page.html()


def render_comparison_html(old: dict, new: dict, labels: tuple[str, str], result: dict) -> str:
    """`xopt report OLD NEW --out DIR`: the deltas with their direction, the regression gate's
    lines, and the charts of both reports."""
    from xopt.analysis import plots_kinds

    page = Page(f"xopt comparison: {new['model']}")
    page.add(f"<h1>{escape(page.title)}</h1><p class='meta'>old: <code>{escape(labels[0])}</code> "
             f"({escape(str(old.get('created', '')))}) → new: <code>{escape(labels[1])}</code> "
             f"({escape(str(new.get('created', '')))})</p>")
    regress = result.get("regressions") or []
    items = [f"<li class='bad'>{escape(x)}</li>" for x in regress] or \
        ["<li>no regression beyond the latency threshold or the drift noise</li>" if result.get("gated") else
         "<li>no regression gate was asked for (--fail-on-regression PCT); deltas below</li>"]
    page.add("<div class='verdict'><h2 style='border:none;margin:.2em 0'>Verdict</h2><ul>" + "".join(items)
             + "</ul></div>")
    page.add("<h2>Deltas</h2>" + _table(["variant", "metric", "old", "new", "delta", "verdict"], result["rows"])
             + "<p class='note'>verdict: the direction the metric moved (latency: lower is better; drift: by the "
             "term's own direction).</p>")
    page.plots(plots_kinds.comparison, old, new, result["rows"], labels)
    for rep, label in ((old, labels[0]), (new, labels[1])):
        page.add(f"<h2>{escape(label)}</h2>" + verdict_block(rep))
    return page.html()
