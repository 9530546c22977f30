"""Reports on the terminal: the profile summary (a table on a wide terminal, one block per
variant below 100 columns, as when piped into 80), tables that stay readable in any width, and
paragraphs wrapped with a hanging indent. Everything comes from the report JSON (analysis/report.py)."""
from __future__ import annotations

from xopt.analysis.report import (_cv, _fmt, _gate_text, _num, budget_status, drift_keys, noisy_timings, shape_line,
                                  summary_rows)
from xopt.stats import megabytes, timing_ms


def say(console, text: str, style: str | None = None, indent: str = "  ") -> None:
    """One paragraph on the terminal, wrapped at its width with a hanging indent (continuation
    lines never start at column 0, where they would read as a new item)."""
    import textwrap

    from rich.markup import escape

    lead = text[:len(text) - len(text.lstrip())]
    wrapped = textwrap.fill(text, width=max(40, console.width - 1), subsequent_indent=lead + indent,
                            break_long_words=False, break_on_hyphens=False)
    console.print(escape(wrapped), style=style, soft_wrap=True)


def _block(r: dict, keys: list[str], higher: set) -> list[str]:
    """One variant in the terminal's narrow summary: accuracy, model-only, end to end, memory."""
    if r.get("error") and not r.get("drift"):
        return [f"  FAILED: {r['error']}"]
    drift = "; ".join(f"{k} {'↑' if k in higher else '↓'} {_fmt(r['drift'].get(k))}" for k in keys)
    gate = _gate_text(r)
    lines = [f"  drift: {'; '.join(p for p in (drift, '' if gate == '–' else f'gate {gate}') if p)}"] \
        if drift or gate != "–" else []
    for label, lat, fps in (("model-only", r.get("latency_ms"), r.get("fps")),
                            ("end to end", r.get("latency_e2e_ms"), r.get("fps_e2e"))):
        if lat and lat.get("p50") is not None:
            lines.append(f"  {label}: p50 {timing_ms(lat, 'p50')}, p99 {timing_ms(lat, 'p99')}, {_num(fps)} fps, "
                         f"CV {_cv(lat)}")
    mem = r.get("memory") or {}
    first = (r.get("warmup_ms") or {}).get("first_inference")
    lines.append(f"  first run {_num(first)} ms; memory {megabytes(mem.get('peak_mb'))} ({mem.get('kind', '?')}); "
                 f"budget {budget_status(r.get('budget') or {})}")
    return lines


def print_summary(report: dict, console=None) -> None:
    """The terminal summary: a table on a wide terminal, one block per variant under 100
    columns (80 when piped), model-only and end-to-end figures on lines of their own."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    w = report["weights"]
    title = (f"{report['model']} on {report['settings'].get('backend')} — weights: {w.get('kind')}"
             f" — profile {report['profile']['name']}")
    if console.width < 100:
        console.print(escape(title), style="bold")
        keys = drift_keys(report)[:1]
        higher = set(report.get("extra", {}).get("higher_is_better") or ())
        for r in report["results"]:
            console.print(escape(f"{r['variant']} ({r['backend']})"), style="bold")
            for line in _block(r, keys, higher):
                say(console, line)
    else:
        head, rows = summary_rows(report, compact=True)
        table = Table(title=escape(title))
        for h in head:
            table.add_column(escape(h), overflow="fold")
        for row in rows:
            table.add_row(*[escape(str(c)) for c in row])
        console.print(table)
    say(console, shape_line(report), style="dim")
    noisy = noisy_timings(report)
    if noisy:
        say(console, f"warning: {noisy}", style="yellow")
    for r in report.get("results", []):  # the model's label-free checks on an end-to-end output
        for c in r.get("label_free_checks") or []:
            if isinstance(c, dict) and c.get("ok") is False:
                say(console, f"warning: {r['variant']}: {c.get('message') or c.get('name')}", style="yellow")
    from xopt.analysis.verdict_lines import verdict_lines

    lines = verdict_lines(report)
    for i, line in enumerate(lines):
        last = i == len(lines) - 1
        say(console, line, style="bold" if last else "red" if "fails its drift gate" in line or "FAIL" in line
            else None)


def print_table(title, head, rows, console=None) -> None:
    """A table that stays readable in any width (80 columns when piped): columns with no
    values are left out, and a table wider than the terminal becomes one block per row
    ("  header: value" lines) instead of cells folded mid-word."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    keep = [i for i, h in enumerate(head) if i == 0 or any(str(r[i]).strip() not in ("", "–") for r in rows)]
    head, rows = [head[i] for i in keep], [[r[i] for i in keep] for r in rows]
    table = Table(title=escape(str(title)) if title else None)
    for h in head:
        table.add_column(escape(str(h)), overflow="fold")
    for row in rows:
        table.add_row(*[escape(str(c)) for c in row])
    natural = console.measure(table, options=console.options.update_width(10**5)).maximum  # unclamped
    if natural <= console.width:
        console.print(table)
        return
    if title:
        console.print(escape(str(title)), style="bold", soft_wrap=True)
    for row in rows:
        console.print(escape(str(row[0])), style="bold", soft_wrap=True)
        for h, c in zip(head[1:], row[1:]):
            if str(c).strip() not in ("", "–"):
                say(console, f"  {h}: {c}")
