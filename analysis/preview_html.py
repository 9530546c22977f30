"""The previews section of report.html: per input, the FP32 reference row, then one row per
variant, each cell a file embedded as a data URI (images, audio), a 3Dmol.js viewer
(structures) or a Plotly chart (series). Past MAX_EMBED bytes of files, cells link to the file
beside the report instead, so report.html stays well under 10 MB."""
from __future__ import annotations

import base64
import json
from html import escape
from pathlib import Path, PurePosixPath

from xopt.analysis.previews import relative_ok
from xopt.previews import MIMES

MAX_EMBED = 3_500_000  # bytes of preview files embedded; plotly.js and 3Dmol.js take ~5.4 MB
REFERENCE = ("input", "reference")
# AlphaFold's pLDDT bands (very high >= 90, confident >= 70, low >= 50, very low): the colours
# every AlphaFold DB entry uses, so a reader recognises them
PLDDT_JS = ("function(a){var b=a.b;return b>=90?'#0053D6':b>=70?'#65CBF3':b>=50?'#FFDB13':'#FF7D45';}")


class Embedder:
    def __init__(self, base_dir: Path | None, budget: int | None = None):
        self.base, self.left, self.linked = base_dir, MAX_EMBED if budget is None else budget, 0
        self.structures: list[dict] = []
        self.series: list = []

    def read(self, rec: dict) -> bytes | None:
        if self.base is None or not relative_ok(rec.get("file", "")):
            return None
        path = self.base / PurePosixPath(rec["file"])
        return path.read_bytes() if path.is_file() else None

    def src(self, rec: dict, data: bytes) -> str:
        """A data URI while the budget lasts, else the relative path of the file beside the report."""
        if len(data) <= self.left:
            self.left -= len(data)
            mime = MIMES.get(Path(rec["file"]).suffix.lower(), "application/octet-stream")
            return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
        self.linked += 1
        return escape(rec["file"], quote=True)


def _caption(rec: dict) -> str:
    scale, text = rec.get("scale") or {}, escape(rec.get("caption") or "")
    if scale and not str(scale.get("unit", "")).isascii():  # the PNG's own scale bar shows ASCII units only
        unit = escape(str(scale["unit"]))
        text = (text + "<br>" if text else "") + f"colour scale {scale.get('lo', 0):.3g}{unit} … {scale.get('hi', 0):.3g}{unit}"
    return text


def cell(rec: dict, emb: Embedder) -> str:
    title = escape(rec.get("title", ""))
    kind = rec.get("kind")
    if kind == "series":
        from xopt.analysis.plots import COLORS, _layout

        try:
            import plotly.graph_objects as go
        except ImportError:  # no report extra: the values as the CSV file beside the report
            return f"<figure><b>{title}</b><figcaption>{escape(rec.get('file', ''))} (CSV)</figcaption></figure>"

        # the first line (FP32) wide and pale underneath, so a variant on top of it stays visible
        fig = go.Figure([go.Scatter(x=rec["x"], y=ys, mode="lines", name=escape(name), opacity=0.45 if i == 0 else 1,
                                    line={"color": COLORS[i % len(COLORS)], "width": 5 if i == 0 else 1.5})
                         for i, (name, ys) in enumerate((rec.get("lines") or {}).items())])
        better = {"higher": ", ↑ better", "lower": ", ↓ better"}.get(rec.get("better"), "")
        fig.update_xaxes(title_text=escape(rec.get("x_title", "")))
        fig.update_yaxes(title_text=escape(rec.get("y_title", "")) + better)
        emb.series.append(_layout(fig, title, 300))
        return f"<figure class='series'><!--series:{len(emb.series) - 1}--><figcaption>{_caption(rec)}</figcaption></figure>"
    data = emb.read(rec)
    if data is None:
        return f"<figure class='missing'><b>{title}</b><figcaption>file missing: {escape(rec.get('file', ''))}</figcaption></figure>"
    if kind == "image":
        return (f"<figure><img src=\"{emb.src(rec, data)}\" alt=\"{escape(rec.get('title', ''), quote=True)}\" "
                f"loading=\"eager\"><figcaption><b>{title}</b><br>{_caption(rec)}</figcaption></figure>")
    if kind == "audio":
        return (f"<figure class='audio'><b>{title}</b><audio controls preload=\"auto\" src=\"{emb.src(rec, data)}\">"
                f"</audio><figcaption>{_caption(rec)}</figcaption></figure>")
    if kind == "structure":
        overlay = emb.read({"file": rec["overlay"]}) if rec.get("overlay") else None
        emb.structures.append({"pdb": data.decode("ascii", "replace"),
                               "overlay": overlay.decode("ascii", "replace") if overlay else None})
        n = len(emb.structures) - 1
        return (f"<figure class='structure'><div class='mol' id='mol-{n}' data-mol='{n}'></div>"
                f"<figcaption><b>{title}</b><br>{_caption(rec)}</figcaption></figure>")
    return f"<figure><b>{title}</b></figure>"


def _rows(records: list[dict]) -> dict:
    """{input: {"label", "groups": {group: [(row label, [records])]}}} in the order recorded."""
    out: dict = {}
    for variant, rec in records:
        inp = out.setdefault(rec.get("input", 0), {"label": rec.get("input_label") or "", "groups": {}})
        rows = inp["groups"].setdefault(rec.get("group") or "", {})
        key = "FP32 reference" if rec["role"] in REFERENCE else variant
        if rec["role"] in REFERENCE and any(r["file"] == rec["file"] for r in rows.get(key, [])):
            continue  # the same FP32 file from another variant
        rows.setdefault(key, []).append(rec)
    return out


def section(report: dict, base_dir: Path | None) -> tuple[str, Embedder]:
    """(HTML, embedder): the embedder carries the structure data and series figures to add."""
    emb = Embedder(base_dir)
    recs = [(r["variant"], rec) for r in report.get("results", []) for rec in (r.get("previews") or [])
            if isinstance(rec, dict)]
    errors = [(r["variant"], r["previews_error"]) for r in report.get("results", []) if r.get("previews_error")]
    if not recs and not errors:
        return "", emb
    parts = ["<h2 id='previews'>The model's outputs: FP32 beside each variant</h2>"]
    for variant, err in errors:
        parts.append(f"<p class='fail'>previews of {escape(variant)} failed: {escape(err)}</p>")
    for r in report.get("results", []):
        if r.get("previews_note"):
            parts.append(f"<p class='note'>{escape(r['variant'])}: {escape(r['previews_note'])}.</p>")
    for inp, data in _rows(recs).items():
        parts.append(f"<h3>input {inp}{': ' + escape(data['label']) if data['label'] else ''}</h3>")
        for group, rows in data["groups"].items():
            if group:
                parts.append(f"<h4>{escape(group)}</h4>")
            parts.append("<table class='previews'>")
            for label, cells in sorted(rows.items(), key=lambda kv: kv[0] != "FP32 reference"):
                parts.append(f"<tr><th>{escape(label)}</th>" + "".join(f"<td>{cell(c, emb)}</td>" for c in cells)
                             + "</tr>")
            parts.append("</table>")
    if emb.linked:
        parts.append(f"<p class='note'>{emb.linked} preview file(s) past the {MAX_EMBED // 1_000_000} MB embedding "
                     "budget are linked as files beside this report instead of embedded.</p>")
    return "\n".join(parts), emb


def structure_script(emb: Embedder) -> str:
    """3Dmol.js viewers for the structures: a backbone trace coloured by pLDDT (B-factor column),
    the FP32 reference as a grey trace underneath when the record names one. A trace rather than
    secondary-structure cartoons: those need a plausible fold, seeded-random weights give none."""
    if not emb.structures:
        return ""
    data = json.dumps(emb.structures).replace("<", "\\u003c")
    return ("<script>(function(){var S=" + data + ";document.querySelectorAll('.mol').forEach(function(el){"
            "var d=S[+el.dataset.mol];var v=$3Dmol.createViewer(el,{backgroundColor:'white'});"
            "if(d.overlay){var o=v.addModel(d.overlay,'pdb');o.setStyle({},{cartoon:{style:'trace',color:'#bbbbbb',"
            "thickness:0.3,opacity:0.6}});}"
            "var m=v.addModel(d.pdb,'pdb');m.setStyle({},{cartoon:{style:'trace',thickness:0.5,colorfunc:" + PLDDT_JS + "}});"
            "v.zoomTo();v.render();el.dataset.rendered='1';});})();</script>")
