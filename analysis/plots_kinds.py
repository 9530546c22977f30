"""Charts for the other report kinds (fit, bench, eval, sweep) and for `xopt report OLD NEW`,
from their JSON only; same conventions as plots.py (units, direction, escaped text)."""
from __future__ import annotations

from html import escape

from xopt.analysis.plots import COLORS, GATE, _go, _layout, _num


def fit(report: dict) -> list:
    """Peak memory against input size, measured points solid and the fit's estimates open,
    with the device budget; time per prediction beside it when the fit has one."""
    go, curve = _go(), (report.get("extra") or {}).get("curve")
    budget = _num((report.get("profile") or {}).get("budget_mb"))
    figs = []
    if isinstance(curve, list) and curve and all(isinstance(p, dict) and "n" in p and "peak_mb" in p for p in curve):
        fig = go.Figure()
        for i, name in enumerate(dict.fromkeys(str(p.get("variant", "")) for p in curve)):
            pts = sorted((p for p in curve if str(p.get("variant", "")) == name), key=lambda p: p["n"])
            fig.add_trace(go.Scatter(x=[p["n"] for p in pts], y=[p["peak_mb"] for p in pts], mode="lines+markers",
                                     name=escape(name), line={"color": COLORS[i % len(COLORS)]},
                                     marker={"symbol": ["circle" if p.get("measured") else "circle-open" for p in pts],
                                             "size": 9}))
        if budget:
            fig.add_hline(y=budget, line={"color": GATE, "dash": "dash"}, annotation_text=f"budget {budget:.0f} MB")
        fig.update_xaxes(title_text="input size (residues, tokens, samples or pixels of the fit)")
        fig.update_yaxes(title_text="peak memory (MB) — lower is better; ● measured, ○ fitted", rangemode="tozero")
        figs.append(_layout(fig, "Memory against input size", 400))
    points = (curve or {}).get("points") if isinstance(curve, dict) else None
    if isinstance(points, list) and points and all(isinstance(p, dict) for p in points):
        xs = [(_num(p.get("batch")) or 1) * (_num(p.get("seconds")) or 0) for p in points]
        ys = [_num(p.get("activation_mb")) for p in points]
        if any(ys):
            fig = go.Figure(go.Scatter(x=xs, y=ys, mode="markers", marker={"size": 10, "color": COLORS[0]},
                                       name="measured", hovertext=[f"batch {p.get('batch')} × {p.get('seconds')} s"
                                                                   for p in points]))
            fig.update_xaxes(title_text="audio per call (batch × segment, s)")
            fig.update_yaxes(title_text="activation peak (MB) — lower is better", rangemode="tozero")
            figs.append(_layout(fig, "Measured memory points of the fit", 360))
    fitted = [r for r in report.get("results", []) if isinstance(r, dict) and _num(r.get("estimated_peak_mb"))]
    if fitted:
        fig = go.Figure(go.Bar(x=[escape(str(r.get("variant"))) for r in fitted],
                               y=[r["estimated_peak_mb"] for r in fitted], marker={"color": COLORS[1]}))
        if budget:
            fig.add_hline(y=budget, line={"color": GATE, "dash": "dash"}, annotation_text=f"budget {budget:.0f} MB")
        fig.update_yaxes(title_text="estimated peak at the chosen size (MB) — must stay under the budget")
        figs.append(_layout(fig, "Chosen size per precision", 340))
    return figs


def bench(report: dict) -> list:
    go, res = _go(), report.get("results")
    if not isinstance(res, dict) or not res:
        return []
    names = [escape(str(k)) for k in res]
    fig = go.Figure()
    for i, (key, label) in enumerate((("speedup_vs_torch", "vs torch eager FP32"),
                                      ("speedup_vs_ort_fp32", "vs ONNX Runtime FP32"))):
        fig.add_trace(go.Bar(x=names, y=[_num((v or {}).get(key)) for v in res.values()], name=label,
                             marker={"color": COLORS[i]}, texttemplate="%{y:.2f}×", textposition="outside"))
    fig.add_hline(y=1.0, line={"color": "#666", "dash": "dot"}, annotation_text="1× (no change)")
    fig.update_yaxes(title_text="speed-up (× of p50 latency) — higher is better", rangemode="tozero")
    return [_layout(fig, "Speed-up per contender (medians of interleaved rounds)", 400, barmode="group")]


def eval_(report: dict) -> list:
    go, figs = _go(), []
    ok = [r for r in report.get("results", []) if isinstance(r, dict) and not r.get("error")]
    for m in report.get("metrics", []):
        pts = [(r, _num((r.get("aggregate") or {}).get(m["key"]))) for r in ok]
        pts = [(r, v) for r, v in pts if v is not None]
        if not pts:
            continue
        fig = go.Figure(go.Scatter(x=[v for _, v in pts], y=[escape(f"{r['variant']} ({r['backend']})") for r, _ in pts],
                                   mode="markers+text", text=[f"{v:.4g}" for _, v in pts], textposition="top center",
                                   marker={"size": 12, "color": COLORS[0]}))
        arrow = "higher is better →" if m["better"] == "higher" else "← lower is better"
        fig.update_xaxes(title_text=f"{escape(m['key'])} ({escape(str(m.get('unit') or 'dataset aggregate'))}) — {arrow}")
        fig.update_yaxes(automargin=True)
        figs.append(_layout(fig, f"{escape(m['key'])} against ground truth", 150 + 48 * len(pts)))
        if len(figs) >= 4:
            break
    return figs


def sweep(report: dict) -> list:
    """Latency and peak memory against input size, one line per (model, variant, backend)."""
    go = _go()
    pts = [p for p in report.get("points", []) if isinstance(p, dict) and p.get("status") == "ok"
           and _num(p.get("input_elements")) and _num(p.get("p50_ms"))]
    if not pts:
        return []
    figs = []
    for key, title, axis in (("p50_ms", "Latency against input size", "model p50 (ms) — lower is better"),
                             ("peak_mb", "Peak memory against input size", "peak memory (MB) — lower is better")):
        fig = go.Figure()
        groups = dict.fromkeys((p["model"], p["variant"], p["backend"]) for p in pts)
        for i, g in enumerate(groups):
            line = sorted((p for p in pts if (p["model"], p["variant"], p["backend"]) == g and _num(p.get(key))),
                          key=lambda p: p["input_elements"])
            fig.add_trace(go.Scatter(x=[p["input_elements"] for p in line], y=[p[key] for p in line],
                                     mode="lines+markers", name=escape(" ".join(map(str, g))),
                                     text=[escape(str(p.get("shape"))) for p in line], line={"color": COLORS[i % 8]}))
        fig.update_xaxes(title_text="input elements (largest input tensor, log)", type="log")
        fig.update_yaxes(title_text=axis + " (log)", type="log")
        figs.append(_layout(fig, title, 420))
    return figs


def comparison(old: dict, new: dict, rows: list[list[str]], labels: tuple[str, str]) -> list:
    """`xopt report OLD NEW`: each latency percentile's change in %, coloured by direction, and
    the model-only latency distributions of both reports per variant."""
    go, figs = _go(), []
    lat = [r for r in rows if r[1].endswith(" ms") and r[4].endswith("%")]
    if lat:
        pct = [float(r[4].rstrip("%")) for r in lat]
        fig = go.Figure(go.Bar(x=pct, y=[escape(f"{r[0]} {r[1]}") for r in lat], orientation="h",
                               marker={"color": ["#55A868" if p < 0 else "#C44E52" if p > 0 else "#999" for p in pct]},
                               text=[f"{p:+.1f}%" for p in pct], textposition="auto"))
        fig.add_vline(x=0, line={"color": "#333", "width": 1})
        fig.update_xaxes(title_text=f"latency change, {escape(labels[1])} vs {escape(labels[0])} (%) — "
                                    "negative (green) is faster")
        fig.update_yaxes(autorange="reversed", automargin=True)
        figs.append(_layout(fig, "Latency change per variant and percentile", 150 + 26 * len(lat)))
    fig = go.Figure()
    for i, (rep, label) in enumerate(((old, labels[0]), (new, labels[1]))):
        for r in rep.get("results", []):
            s = (r.get("latency_ms") or {}).get("samples") if isinstance(r, dict) and not r.get("error") else None
            if s:
                fig.add_trace(go.Box(y=s, x=[escape(f"{r['variant']} ({r['backend']})")] * len(s), name=escape(label),
                                     marker={"color": COLORS[i]}, boxpoints="all", jitter=0.3, legendgroup=str(i),
                                     showlegend=not any(t.legendgroup == str(i) for t in fig.data)))
    if fig.data:
        fig.update_yaxes(title_text="model-only latency per frame (ms) — lower is better", rangemode="tozero")
        figs.append(_layout(fig, "Latency distributions, old and new", 400, boxmode="group"))
    return figs
