"""Report charts as Plotly figures, built from the report JSON only.

Every axis says its unit and which way is better. Text from the report (variant and model
names, file names) is HTML-escaped before it reaches a figure: Plotly renders a subset of HTML
in labels. report_html turns the figures into <div>s that share one embedded plotly.js.
"""
from __future__ import annotations

import math
from html import escape

COLORS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]
FLOOR_BAND = "rgba(85,168,104,0.16)"  # the noise floor: indistinguishable from the FP32 model's own noise
GATE = "#C44E52"


def _go():
    import plotly.graph_objects as go

    return go


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _layout(fig, title: str, height: int = 360, wide: bool = False, **kw):
    """Shared look; `wide` figures take the page's whole width."""
    fig.update_layout(title={"text": title, "x": 0.01, "font": {"size": 15}}, height=height, template="plotly_white",
                      meta={"wide": wide},
                      margin={"l": 70, "r": 30, "t": 60, "b": 60}, font={"family": "system-ui, sans-serif", "size": 12},
                      legend={"orientation": "h", "y": -0.2}, **kw)
    return fig


def _label(r: dict) -> str:
    return escape(f"{r['variant']} ({r['backend']})")


def _ok(report: dict) -> list[dict]:
    return [r for r in report.get("results", []) if isinstance(r, dict) and not r.get("error")]


def latency(report: dict):
    """Model-only and end-to-end latency per frame side by side: every sample, box at p25/p50/p75."""
    from plotly.subplots import make_subplots

    go, ok = _go(), _ok(report)
    e2e = any((r.get("latency_e2e_ms") or {}).get("samples") for r in ok)
    if not any((r.get("latency_ms") or {}).get("samples") for r in ok):
        return None
    titles = ["model only (session.run)"] + (["end to end (pre/post-processing included)"] if e2e else [])
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=titles, horizontal_spacing=0.12)
    for i, r in enumerate(ok):
        for col, key in enumerate(("latency_ms", "latency_e2e_ms")[:len(titles)], start=1):
            lat = r.get(key) or {}
            if lat.get("samples"):
                fig.add_trace(go.Box(y=lat["samples"], name=_label(r), boxpoints="all", jitter=0.4, pointpos=0,
                                     marker={"color": COLORS[i % len(COLORS)], "size": 5}, line={"width": 1.5},
                                     legendgroup=r["variant"], showlegend=col == 1,
                                     hovertemplate="%{y:.3g} ms<extra>" + _label(r) + "</extra>"), row=1, col=col)
    for col in range(1, len(titles) + 1):
        fig.update_yaxes(title_text="latency per frame (ms) — lower is better", rangemode="tozero", row=1, col=col)
    n = (ok[0].get("latency_ms") or {}).get("n")
    return _layout(fig, f"Latency per frame{f' ({n} timed frames per variant)' if n else ''}", 420, wide=True)


def _unit(report: dict, key: str) -> str:
    extra = report.get("extra") or {}
    units = extra.get("drift_units") or {}
    gate = extra.get("gate") or {}
    if key in units:
        return units[key]
    if key == gate.get("key") and gate.get("unit"):
        return gate["unit"].strip()
    return "dB" if key.endswith("_db") else "unitless"


def drift(report: dict) -> list:
    """One dot plot per drift term: each variant against FP32, the noise floor as a band (the
    range the FP32 model's own drift under ±1 input quantum covers) and the gate's bound."""
    go, extra = _go(), report.get("extra") or {}
    higher = set(extra.get("higher_is_better") or ())
    gate = extra.get("gate") or {}
    keys = list(extra.get("drift_keys") or [])
    rows = [r for r in _ok(report) if max((t.get("max_abs", 0) for t in (r["drift"].get("tensor") or {}).values()),
                                          default=1) > 0]  # an artifact identical to the reference draws nothing
    figs = []
    for key in keys:
        pts = [(r, _num(r["drift"].get(key))) for r in rows]
        pts = [(r, v) for r, v in pts if v is not None]
        if not pts:
            continue
        hib, unit = key in higher, _unit(report, key)
        floors = [_num((r.get("noise_floor") or {}).get(key)) for r, _ in pts]
        floor = next((f for f in floors if f is not None), None)
        fig = go.Figure()
        fig.add_trace(go.Scatter(x=[v for _, v in pts], y=[_label(r) for r, _ in pts], mode="markers+text",
                                 text=[f"{v:.4g}" for _, v in pts], textposition="middle right",
                                 marker={"size": 12, "color": [COLORS[i % len(COLORS)] for i in range(len(pts))]},
                                 hovertemplate="%{x:.4g}<extra>%{y}</extra>", showlegend=False))
        values = [v for _, v in pts] + ([floor] if floor is not None else [])
        bound = next((_num((r.get("drift_gate") or {}).get("bound")) for r, _ in pts
                      if (r.get("drift_gate") or {}).get("key") == key), None)
        if bound is not None:
            values.append(bound)
        lo, hi = min(values), max(values)
        pad = (hi - lo) * 0.15 or abs(hi) * 0.1 or 1.0
        if floor is not None:
            x0, x1 = (floor, hi + pad) if hib else (min(0.0, lo), floor)
            fig.add_vrect(x0=x0, x1=x1, fillcolor=FLOOR_BAND, line_width=0, layer="below",
                          annotation_text="within the noise floor",
                          annotation_position="top left" if hib else "top right")
        if bound is not None:
            fig.add_vline(x=bound, line={"color": GATE, "dash": "dash", "width": 1.5},
                          annotation_text=f"gate {gate.get('noise_multiple', '')}× noise" if gate.get(
                              "bound_kind") != "limit" else "gate", annotation_position="bottom right")
        better = "higher is better →" if hib else "← lower is better"
        fig.update_xaxes(title_text=f"{escape(key)} vs FP32 ({escape(unit)}) — {better}",
                         range=[-0.3 * pad if not hib and lo >= 0 else lo - pad, hi + 2 * pad])
        fig.update_yaxes(automargin=True)
        figs.append(_layout(fig, f"Drift: {escape(key)}", 150 + 48 * len(pts)))
    return figs


def memory(report: dict) -> list:
    """Peak memory per variant against the device budget, and memory over time with its phases."""
    go, ok = _go(), [r for r in _ok(report) if _num((r.get("memory") or {}).get("peak_mb")) is not None]
    if not ok:
        return []
    prof = report.get("profile") or {}
    kind = ok[0]["memory"].get("kind")
    basis = "VRAM" if kind == "vram-nvml" else "host RSS, a proxy for VRAM" if prof.get("kind") == "gpu" else "host RSS"
    fig = go.Figure(go.Bar(x=[r["memory"]["peak_mb"] for r in ok], y=[_label(r) for r in ok], orientation="h",
                           marker={"color": [COLORS[i % len(COLORS)] for i in range(len(ok))]},
                           text=[f"{r['memory']['peak_mb']:.0f} MB" for r in ok], textposition="auto",
                           hovertemplate="%{x:.0f} MB<extra>%{y}</extra>"))
    budget = _num(prof.get("budget_mb"))
    if budget:
        fig.add_vline(x=budget, line={"color": GATE, "dash": "dash"},
                      annotation_text=f"{escape(str(prof.get('name', 'device')))} budget {budget:.0f} MB")
    fig.update_xaxes(title_text=f"peak memory (MB, {basis}) — lower is better", rangemode="tozero")
    fig.update_yaxes(automargin=True)
    figs = [_layout(fig, "Peak memory per variant", 150 + 48 * len(ok))]
    timed = [r for r in ok if (r["memory"].get("timeline") or {}).get("t_s")]
    if timed:
        fig = go.Figure()
        for i, r in enumerate(timed):
            tl = r["memory"]["timeline"]
            fig.add_trace(go.Scatter(x=tl["t_s"], y=tl["mb"], mode="lines", name=_label(r),
                                     line={"color": COLORS[i % len(COLORS)]},
                                     hovertemplate="%{x:.2f} s: %{y:.0f} MB<extra>" + _label(r) + "</extra>"))
            for t, phase in tl.get("marks", []) if i == 0 else ():
                fig.add_vline(x=t, line={"color": "#999", "dash": "dot", "width": 1}, annotation_text=escape(phase),
                              annotation_textangle=-90, annotation_position="top right")
        fig.update_xaxes(title_text="time since the variant's session started loading (s)")
        fig.update_yaxes(title_text="memory (MB) — lower is better", rangemode="tozero")
        figs.append(_layout(fig, f"Memory over time ({basis}; phases of the first variant marked)", 380, wide=True))
    return figs


def layer_drift(report: dict) -> list:
    """Mixed precision: the groups whose return to FP32 improves the drift most, and drift
    against speed as groups fall back (extra.layer_drift, extra.drift_vs_speed)."""
    go, extra, figs = _go(), report.get("extra") or {}, []
    layers = [x for x in extra.get("layer_drift") or [] if isinstance(x, dict)
              and _num(x.get("improvement", x.get("drift"))) is not None]
    if layers:
        top = layers[:15]
        gain = all("improvement" in x for x in top)
        fig = go.Figure(go.Bar(x=[x["improvement"] if gain else x["drift"] for x in top],
                               y=[escape(f"{x.get('variant', '')} {x.get('group')}".strip()) for x in top],
                               orientation="h", marker={"color": COLORS[3]},
                               hovertext=[escape(", ".join(map(str, x.get("nodes", [])[:8]))) for x in top]))
        fig.update_xaxes(title_text="improvement of the domain drift when this group alone returns to FP32 — "
                         "larger: a worse layer in low precision" if gain else
                         "domain drift with this group alone in low precision — lower is better")
        fig.update_yaxes(autorange="reversed", automargin=True)
        figs.append(_layout(fig, "Per-layer drift (worst first)", 150 + 28 * len(top)))
    curve = [x for x in extra.get("drift_vs_speed") or [] if isinstance(x, dict)
             and _num(x.get("speedup")) is not None and _num(x.get("drift")) is not None]
    if curve:
        fig = go.Figure()
        for i, v in enumerate(dict.fromkeys(x.get("variant", "") for x in curve)):
            pts = [x for x in curve if x.get("variant", "") == v]
            fig.add_trace(go.Scatter(x=[x["speedup"] for x in pts], y=[x["drift"] for x in pts], name=escape(v or "variant"),
                                     mode="lines+markers+text", text=[escape(str(x.get("label", ""))) for x in pts],
                                     textposition="top right", line={"color": COLORS[i % len(COLORS)]}))
        fig.update_xaxes(title_text="speed-up vs FP32 (×) — higher is better →")
        gate = extra.get("gate") or {}
        fig.update_yaxes(title_text=f"{gate.get('key', 'domain drift')} vs FP32 — "
                         f"{'higher' if gate.get('higher_is_better') else 'lower'} is closer")
        figs.append(_layout(fig, "Drift against speed as groups fall back to FP32", 380))
    return figs


def profile_figures(report: dict) -> list:
    lat = latency(report)
    return ([lat] if lat else []) + drift(report) + memory(report) + layer_drift(report)
