"""`xopt report ... --out DIR`: the comparison (or one re-rendered report) as report.html and its
Markdown twin report.md, written like every report (atomic, recorded, never over a file xopt
did not write without --force)."""
from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Sequence

from xopt.atomic import write_text


def comparison_markdown(old: dict, new: dict, labels: tuple[str, str], result: dict) -> str:
    from xopt.analysis.previews import md_text
    from xopt.analysis.report import _md_table
    from xopt.analysis.verdict_lines import verdict_lines

    out = [f"# xopt comparison: {md_text(new['model'])}", "",
           f"old: `{labels[0]}` ({old.get('created', '')}) → new: `{labels[1]}` ({new.get('created', '')})", "",
           "## Verdict", ""]
    out += [f"- **regression**: {md_text(x)}" for x in result.get("regressions", [])] or \
        ["- no regression beyond the latency threshold or the drift noise" if result.get("gated") else
         "- no regression gate was asked for (--fail-on-regression PCT); deltas below"]
    rows = [[md_text(c) for c in row] for row in result["rows"]]
    out += ["", "## Deltas", "", _md_table(["variant", "metric", "old", "new", "delta", "verdict"], rows), "",
            "verdict: the direction the metric moved (latency: lower is better; drift: by the term's own direction). "
            "Charts: report.html beside this file.", ""]
    for rep, label in ((old, labels[0]), (new, labels[1])):
        out += [f"## {md_text(label)}", ""] + [f"- {md_text(x)}" for x in verdict_lines(rep)] + [""]
    return "\n".join(out)


def table_markdown(reports: Sequence[dict], labels: Sequence[str], head, rows) -> str:
    from xopt.analysis.previews import md_text
    from xopt.analysis.report import _md_table

    return "\n".join([f"# xopt comparison of {len(reports)} reports", "",
                      _md_table(head, [[md_text(c) for c in row] for row in rows]), ""])


def table_html(reports: Sequence[dict], labels: Sequence[str], head, rows) -> str:
    from xopt.analysis.report_html import Page, _table, verdict_block

    page = Page(f"xopt comparison of {len(reports)} reports")
    page.add(f"<h1>{escape(page.title)}</h1>" + _table(head, rows))
    for rep, label in zip(reports, labels):
        page.add(f"<h2>{escape(label)}</h2>" + verdict_block(rep))
    return page.html()


def write(out_dir: str | Path, html: str, md: str, force: bool = False, report: dict | None = None,
          source: Path | None = None) -> dict[str, Path]:
    """report.html and report.md into `out_dir` (with a re-rendered `report`'s preview files,
    copied from its `source` folder), recording their sha256 so a re-run may replace them."""
    from xopt.analysis import previews
    from xopt.analysis.report import refuse_existing, report_paths
    from xopt.written import record

    out_dir = Path(out_dir)
    names = tuple(previews.files(report)) if report is not None and source is not None else ()
    refuse_existing(out_dir, force, names)
    paths = {k: v for k, v in report_paths(out_dir).items() if k in ("html", "md")}
    copied = previews.copy_into(report, source / previews.FOLDER, out_dir) if names else []
    write_text(paths["html"], html, force=True)
    write_text(paths["md"], md, force=True)
    record([*paths.values(), *copied])
    return paths
