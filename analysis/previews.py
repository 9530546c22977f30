"""The profiler's side of a spec's `previews` hook (see xopt.previews), and the report's.

The hook runs in the variant's own process on the first few profiled inputs and writes into
`<staging>/<variant>/`; the report records each file as "previews/<variant>/<name>", and
`write_reports` copies the files beside report.json. The input and FP32-reference files every
variant writes are recorded once (the first variant's), and a variant whose outputs equal FP32's
keeps only those.
"""
from __future__ import annotations

import re
import traceback
from pathlib import Path, PurePosixPath

import numpy as np

from xopt.previews import KINDS, MIMES, ROLES

PREVIEW_INPUTS = 2  # inputs previewed per variant: enough to see a pattern, small enough for the HTML
FOLDER = "previews"


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "variant"


def run_hook(spec, variant: str, feeds, refs, outs, staging: str | Path, n: int = PREVIEW_INPUTS) -> dict:
    """{"previews": [record]} or {"previews_error": text}: a preview that fails is reported on the
    page, it does not cost the profile its measurements."""
    if spec.previews is None or n <= 0 or not feeds:
        return {}
    folder = Path(staging) / safe_name(variant)
    folder.mkdir(parents=True, exist_ok=True)
    k = min(n, len(feeds))
    try:
        records = list(spec.previews(feeds[:k], refs[:k], outs[:k], folder))
        for r in records:
            check_record(r)
    except Exception as exc:  # noqa: BLE001 - shown in the report with its last frame
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return {"previews_error": f"{type(exc).__name__}: {exc} ({Path(where.filename).name}:{where.lineno})"}
    note = {}
    if all(set(r) == set(o) and all(np.array_equal(r[name], o[name]) for name in r)
           for r, o in zip(refs[:k], outs[:k])):
        records = [r for r in records if r["role"] in ("input", "reference")]  # nothing new to look at
        note = {"previews_note": "outputs identical to the FP32 reference on these inputs"}
    prefix = f"{FOLDER}/{safe_name(variant)}/"
    return {"previews": [{**r, "file": prefix + r["file"], **({"overlay": prefix + r["overlay"]} if r.get("overlay")
                                                              else {})} for r in records], **note}


def check_record(r) -> None:
    if not isinstance(r, dict) or r.get("kind") not in KINDS or r.get("role") not in ROLES \
            or not isinstance(r.get("file"), str) or not isinstance(r.get("title"), str):
        raise ValueError(f"not a preview record (xopt.previews.record): {r!r:.200}")


def relative_ok(name: str) -> bool:
    """A preview path a report may reference: relative, inside previews/, no way out of it."""
    p = PurePosixPath(name)
    return (not p.is_absolute() and p.parts[:1] == (FOLDER,) and ".." not in p.parts and "\\" not in name
            and Path(name).suffix.lower() in MIMES)


def files(report: dict) -> list[str]:
    out = []
    for r in report.get("results", []):
        for rec in r.get("previews") or []:
            for name in (rec.get("file", ""), rec.get("overlay") or ""):
                if relative_ok(name) and name not in out:
                    out.append(name)
    return out


def dedupe(report: dict, staging: str | Path) -> None:
    """Point the input and FP32-reference records every variant wrote at the first variant's
    files: they show the same thing by construction (same inputs, same FP32 outputs), even where
    an encoder's bytes differ (an Ogg stream's random serial number)."""
    from xopt.hashing import sha256_file

    first: dict[tuple, str] = {}
    moved: dict[str, str] = {}
    root = Path(staging)
    for r in report.get("results", []):
        for rec in r.get("previews") or []:
            src = root / PurePosixPath(rec["file"]).relative_to(FOLDER) if relative_ok(rec["file"]) else None
            if src is None or not src.is_file():
                continue
            rec["sha256"], rec["bytes"] = sha256_file(src), src.stat().st_size
            if rec["role"] in ("input", "reference"):
                key = (rec.get("input"), rec.get("group"), rec["role"], rec["kind"], rec.get("title"))
                moved[rec["file"]] = rec["file"] = first.setdefault(key, rec["file"])
    for r in report.get("results", []):
        for rec in r.get("previews") or []:
            if rec.get("overlay"):
                rec["overlay"] = moved.get(rec["overlay"], rec["overlay"])


def copy_into(report: dict, staging: str | Path, out_dir: Path) -> list[Path]:
    """Copy the report's preview files from `staging` to `out_dir`; the paths written."""
    from xopt.atomic import copy_file

    written = []
    for name in files(report):
        src = Path(staging) / PurePosixPath(name).relative_to(FOLDER)
        if src.is_file():
            written.append(copy_file(src, out_dir / name, force=True))
    return written


def md_text(text) -> str:
    """Report text inside Markdown: no table breaks, no HTML, no link syntax from a file name."""
    out = str(text).replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
    return out.replace("[", "\\[").replace("]", "\\]").replace("\n", " ")


def _md_cell(rec: dict) -> str:
    name = rec.get("file", "")
    if not relative_ok(name):
        return md_text(rec.get("title", ""))
    target = name.replace(" ", "%20").replace("(", "%28").replace(")", "%29")
    title = md_text(rec.get("title", ""))
    if rec.get("kind") == "image":
        return f"![{title}]({target})<br>{title}"
    label = {"audio": "▶ listen", "structure": "3D structure (PDB)", "series": "values (CSV)"}.get(rec.get("kind"), "file")
    return f"[{title}: {label}]({target})"


def markdown(report: dict) -> list[str]:
    """The previews as Markdown tables, images as files beside report.md (report.html embeds them)."""
    recs = [(r["variant"], rec) for r in report.get("results", []) for rec in (r.get("previews") or [])]
    errors = [f"- previews of {md_text(r['variant'])} failed: {md_text(r['previews_error'])}"
              for r in report.get("results", []) if r.get("previews_error")]
    if not recs and not errors:
        return []
    notes = [f"- {md_text(r['variant'])}: {md_text(r['previews_note'])}" for r in report.get("results", [])
             if r.get("previews_note")]
    out = ["## The model's outputs: FP32 beside each variant", "", *errors, *notes]
    layout: dict = {}
    for variant, rec in recs:
        inp = layout.setdefault(rec.get("input", 0), {"label": rec.get("input_label") or "", "groups": {}})
        row = "FP32 reference" if rec["role"] in ("input", "reference") else variant
        cells = inp["groups"].setdefault(rec.get("group") or "", {}).setdefault(row, [])
        if rec["file"] not in [c["file"] for c in cells]:
            cells.append(rec)
    for i, inp in layout.items():
        out += ["", f"### input {i}" + (f": {md_text(inp['label'])}" if inp["label"] else ""), ""]
        for group, rows in inp["groups"].items():
            if group:
                out += [f"#### {md_text(group)}", ""]
            width = max(len(c) for c in rows.values())
            out += ["| | " + " | ".join([""] * width) + " |", "|---" * (width + 1) + "|"]
            for label, cells in sorted(rows.items(), key=lambda kv: kv[0] != "FP32 reference"):
                out.append(f"| **{md_text(label)}** | " + " | ".join([_md_cell(c) for c in cells]
                                                                     + [""] * (width - len(cells))) + " |")
            out.append("")
    return out
