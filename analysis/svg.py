"""Tiny self-contained SVG charts, so report.html needs no plotting library or network."""
from __future__ import annotations

from html import escape
from typing import Sequence

PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]
W, H, PAD = 640, 260, 48


def _scale(lo, hi, a, b):
    span = (hi - lo) or 1.0
    return lambda v: a + (v - lo) / span * (b - a)


def _frame(title: str, body: list[str], ylabel: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
            f'font-family="sans-serif" font-size="11"><text x="{W/2}" y="16" text-anchor="middle" '
            f'font-size="13">{escape(title)}</text><text x="12" y="{H/2}" transform="rotate(-90 12 {H/2})" '
            f'text-anchor="middle">{escape(ylabel)}</text>'
            f'<line x1="{PAD}" y1="{H-PAD}" x2="{W-10}" y2="{H-PAD}" stroke="#333"/>'
            f'<line x1="{PAD}" y1="28" x2="{PAD}" y2="{H-PAD}" stroke="#333"/>' + "".join(body) + "</svg>")


def _yticks(lo, hi, y) -> list[str]:
    out = []
    for i in range(5):
        v = lo + (hi - lo) * i / 4
        out.append(f'<text x="{PAD-4}" y="{y(v)+4:.1f}" text-anchor="end">{v:.3g}</text>'
                   f'<line x1="{PAD}" x2="{W-10}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>')
    return out


def strip_plot(title: str, series: dict[str, Sequence[float]], ylabel: str) -> str:
    """Each series' samples as jittered dots with a p50 bar and p99 tick: a latency distribution."""
    vals = [v for s in series.values() for v in s]
    if not vals:
        return ""
    lo, hi = 0.0, max(vals) * 1.1
    y = _scale(lo, hi, H - PAD, 30)
    body = _yticks(lo, hi, y)
    step = (W - PAD - 20) / max(1, len(series))
    for i, (name, s) in enumerate(series.items()):
        cx = PAD + step * (i + 0.5)
        color = PALETTE[i % len(PALETTE)]
        ordered = sorted(s)
        for j, v in enumerate(s):
            jitter = ((j * 37) % 21 - 10) / 10 * step * 0.25
            body.append(f'<circle cx="{cx+jitter:.1f}" cy="{y(v):.1f}" r="2.2" fill="{color}" fill-opacity="0.6"/>')
        if ordered:
            p50 = ordered[len(ordered) // 2]
            p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
            body.append(f'<line x1="{cx-step*0.35:.1f}" x2="{cx+step*0.35:.1f}" y1="{y(p50):.1f}" y2="{y(p50):.1f}" '
                        f'stroke="#000" stroke-width="2"/><line x1="{cx-step*0.2:.1f}" x2="{cx+step*0.2:.1f}" '
                        f'y1="{y(p99):.1f}" y2="{y(p99):.1f}" stroke="#000" stroke-dasharray="3 2"/>')
        body.append(f'<text x="{cx:.1f}" y="{H-PAD+16}" text-anchor="middle">{escape(name)}</text>')
    body.append(f'<text x="{W-12}" y="{H-8}" text-anchor="end">solid: p50, dashed: p99</text>')
    return _frame(title, body, ylabel)


def bar_chart(title: str, bars: dict[str, float], ylabel: str, reference: float | None = None,
              reference_label: str = "") -> str:
    """Bars per variant, with an optional horizontal reference line (e.g. the noise floor)."""
    vals = [v for v in bars.values() if v == v] + ([reference] if reference is not None else [])
    if not vals:
        return ""
    lo, hi = min(0.0, min(vals)), max(vals) * 1.15 or 1.0
    y = _scale(lo, hi, H - PAD, 30)
    body = _yticks(lo, hi, y)
    step = (W - PAD - 20) / max(1, len(bars))
    for i, (name, v) in enumerate(bars.items()):
        x = PAD + step * i + step * 0.2
        top, base = (y(v), y(0)) if v == v else (y(0), y(0))
        body.append(f'<rect x="{x:.1f}" y="{min(top, base):.1f}" width="{step*0.6:.1f}" height="{abs(base-top):.1f}" '
                    f'fill="{PALETTE[i % len(PALETTE)]}"/><text x="{x+step*0.3:.1f}" y="{min(top, base)-3:.1f}" '
                    f'text-anchor="middle">{v:.3g}</text>'
                    f'<text x="{x+step*0.3:.1f}" y="{H-PAD+16}" text-anchor="middle">{escape(name)}</text>')
    if reference is not None:
        body.append(f'<line x1="{PAD}" x2="{W-10}" y1="{y(reference):.1f}" y2="{y(reference):.1f}" stroke="#C44E52" '
                    f'stroke-dasharray="5 3"/><text x="{W-12}" y="{y(reference)-4:.1f}" text-anchor="end" '
                    f'fill="#C44E52">{escape(reference_label)}</text>')
    return _frame(title, body, ylabel)


def line_chart(title: str, lines: dict[str, Sequence[tuple[float, float]]], xlabel: str, ylabel: str,
               hline: float | None = None, hline_label: str = "") -> str:
    pts = [p for ln in lines.values() for p in ln]
    if not pts:
        return ""
    xs, ys = [p[0] for p in pts], [p[1] for p in pts] + ([hline] if hline is not None else [])
    x = _scale(min(xs), max(xs), PAD, W - 20)
    y = _scale(0.0, max(ys) * 1.1, H - PAD, 30)
    body = _yticks(0.0, max(ys) * 1.1, y)
    for v in sorted(set(xs)):
        body.append(f'<text x="{x(v):.1f}" y="{H-PAD+14}" text-anchor="middle">{v:g}</text>')
    body.append(f'<text x="{W/2}" y="{H-8}" text-anchor="middle">{escape(xlabel)}</text>')
    for i, (name, ln) in enumerate(lines.items()):
        color = PALETTE[i % len(PALETTE)]
        ln = sorted(ln)
        body.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="'
                    + " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in ln) + '"/>')
        body.append(f'<text x="{W-14}" y="{40+14*i}" text-anchor="end" fill="{color}">{escape(name)}</text>')
    if hline is not None:
        body.append(f'<line x1="{PAD}" x2="{W-10}" y1="{y(hline):.1f}" y2="{y(hline):.1f}" stroke="#C44E52" '
                    f'stroke-dasharray="5 3"/><text x="{PAD+4}" y="{y(hline)-4:.1f}" fill="#C44E52">'
                    f'{escape(hline_label)}</text>')
    return _frame(title, body, ylabel)
