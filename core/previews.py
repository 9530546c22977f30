"""Previews of a model's own outputs, FP32 beside a variant, written as files a report shows.

A spec's `previews` hook is called by the profiler on a few profiled inputs:

    previews(feeds, fp32_outputs, variant_outputs, out_dir) -> [record]

It writes files under `out_dir` with the helpers below and returns one record per file:
{"input": i, "input_label": str, "group": str, "role": "input" | "reference" | "variant" |
"difference", "kind": "image" | "audio" | "structure" | "series", "title": str, "file": name
relative to out_dir, "caption": str, ...}. The report lays each input out as rows (the FP32
reference, then each variant) and columns (the records of a group in the order returned);
records of role "input" and "reference" are the same for every variant and shown once.
Report HTML embeds the files (data URIs), report.md links them as files beside it.
"""
from __future__ import annotations

import io
import math
from functools import lru_cache
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

ROLES = ("input", "reference", "variant", "difference")
KINDS = ("image", "audio", "structure", "series")
MAX_SIDE = 320  # preview pixels on the long side: what a report needs to see edges, not the full frame
MIN_SIDE = 240  # smaller arrays (a 64-residue distance map) are enlarged by whole pixels to be seen
MIMES = {".png": "image/png", ".jpg": "image/jpeg", ".ogg": "audio/ogg", ".wav": "audio/wav",
         ".pdb": "chemical/x-pdb", ".csv": "text/csv"}


def record(out_dir: str | Path, name: str, kind: str, role: str, title: str, input: int = 0, group: str = "",
           caption: str = "", input_label: str = "", **extra) -> dict:
    if kind not in KINDS or role not in ROLES:
        raise ValueError(f"preview kind {kind!r} / role {role!r}: kinds are {KINDS}, roles {ROLES}")
    path = Path(out_dir) / name
    if not path.is_file():
        raise FileNotFoundError(f"preview {name} was not written under {out_dir}")
    return {"input": int(input), "input_label": input_label, "group": group, "role": role, "kind": kind,
            "title": title, "file": name, "caption": caption, **extra}


def _write(out_dir, name: str, data: bytes) -> None:
    from xopt.atomic import write_bytes

    write_bytes(Path(out_dir) / name, data, force=True)


@lru_cache(maxsize=8)
def _lut(name: str) -> np.ndarray:
    """256 RGB entries of a Plotly colour scale ("Viridis", "Magma", "Inferno", ...)."""
    from plotly.colors import sample_colorscale

    rgb = sample_colorscale(name, list(np.linspace(0.0, 1.0, 256)))
    return np.array([[int(float(c)) for c in s[s.index("(") + 1:-1].split(",")] for s in rgb], np.uint8)


def colormap(values: np.ndarray, lo: float, hi: float, name: str = "Viridis") -> np.ndarray:
    """H x W values -> H x W x 3 uint8 through a colour scale, `lo`..`hi` mapped to its ends."""
    v = np.asarray(values, np.float64)
    span = (hi - lo) if hi > lo else 1.0
    idx = np.clip(np.nan_to_num((v - lo) / span, nan=0.0) * 255.0, 0, 255).astype(np.uint8)
    return _lut(name)[idx]


def shrink(values: np.ndarray, max_side: int = MAX_SIDE, reduce: str = "mean") -> np.ndarray:
    """Downscale a 2-D (or H x W x C) array by an integer factor so its long side <= max_side.
    reduce="max" keeps a single bad pixel visible in a difference map; "mean" is area averaging."""
    a = np.asarray(values)
    h, w = a.shape[:2]
    f = max(1, math.ceil(max(h, w) / max_side))
    if f == 1:
        return a
    ph, pw = (-h) % f, (-w) % f
    pad = [(0, ph), (0, pw)] + [(0, 0)] * (a.ndim - 2)
    a = np.pad(a.astype(np.float64), pad, mode="edge")
    blocks = a.reshape(a.shape[0] // f, f, a.shape[1] // f, f, *a.shape[2:])
    return blocks.max(axis=(1, 3)) if reduce == "max" else blocks.mean(axis=(1, 3))


def grow(a: np.ndarray, min_side: int = MIN_SIDE) -> np.ndarray:
    """Enlarge by an integer factor (each value a block of pixels) so the long side >= min_side."""
    f = max(1, min_side // max(a.shape[:2]))
    return np.repeat(np.repeat(a, f, axis=0), f, axis=1) if f > 1 else a


def png_bytes(pixels: np.ndarray) -> bytes:
    from PIL import Image

    a = np.asarray(pixels)
    if a.dtype != np.uint8:
        a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def image(out_dir, name: str, pixels: np.ndarray, role: str, title: str, **meta) -> dict:
    """An RGB (H x W x 3) or grey (H x W) uint8/0..255 image as PNG, shrunk to MAX_SIDE."""
    _write(out_dir, name, png_bytes(grow(shrink(pixels, meta.pop("max_side", MAX_SIDE)))))
    return record(out_dir, name, "image", role, title, **meta)


def _colorbar(width: int, lo: float, hi: float, unit: str, scale: str, gamma: float = 1.0) -> np.ndarray:
    """A strip under a heatmap: the colour scale and its end values (and its middle's, on a
    non-linear scale), so the PNG reads alone."""
    from PIL import Image, ImageDraw, ImageFont

    strip = Image.new("RGB", (max(width, 160), 30), "white")
    bar = colormap(np.tile(np.linspace(lo, hi, strip.width - 8)[None, :], (8, 1)), lo, hi, scale)
    strip.paste(Image.fromarray(bar), (4, 2))
    draw, font = ImageDraw.Draw(strip), ImageFont.load_default(size=11)
    # the default font has no glyphs beyond ASCII (Å): such a unit is left to the caption
    left, right = f"{lo:.3g}", f"{hi:.3g}{unit if unit.isascii() else ''}"
    draw.text((4, 12), left, fill="black", font=font)
    draw.text((strip.width - 4 - draw.textlength(right, font=font), 12), right, fill="black", font=font)
    if gamma != 1.0:
        mid = f"{lo + (hi - lo) * 0.5 ** (1.0 / gamma):.2g}"
        draw.text(((strip.width - draw.textlength(mid, font=font)) / 2, 12), mid, fill="black", font=font)
    return np.asarray(strip)


def heatmap(out_dir, name: str, values: np.ndarray, role: str, title: str, lo: float | None = None,
            hi: float | None = None, unit: str = "", scale: str = "Viridis", reduce: str = "mean",
            gamma: float = 1.0, **meta) -> dict:
    """A 2-D array as a colour-mapped PNG with its scale drawn underneath (lo/hi default to the
    data's range); the record carries {"scale": {lo, hi, unit, colors, gamma}} for the caption.
    gamma < 1 spreads small values (0.5: a square-root scale, for differences mostly near 0)."""
    v = shrink(np.asarray(values, np.float64), meta.pop("max_side", MAX_SIDE), reduce)
    finite = v[np.isfinite(v)]
    lo = float(finite.min()) if lo is None and finite.size else float(lo or 0.0)
    hi = float(finite.max()) if hi is None and finite.size else float(hi if hi is not None else 1.0)
    if gamma != 1.0 and hi > lo:
        v = lo + (hi - lo) * np.clip((v - lo) / (hi - lo), 0.0, 1.0) ** gamma
    pixels = grow(colormap(v, lo, hi, scale))
    bar = _colorbar(pixels.shape[1], lo, hi, unit, scale, gamma)
    canvas = np.full((pixels.shape[0] + bar.shape[0], max(pixels.shape[1], bar.shape[1]), 3), 255, np.uint8)
    canvas[:pixels.shape[0], :pixels.shape[1]] = pixels
    canvas[pixels.shape[0]:, :bar.shape[1]] = bar
    _write(out_dir, name, png_bytes(canvas))
    return record(out_dir, name, "image", role, title,
                  scale={"lo": lo, "hi": hi, "unit": unit, "colors": scale, "gamma": gamma}, **meta)


def checkerboard(h: int, w: int, cell: int = 16) -> np.ndarray:
    """The transparency checkerboard composites are shown on (H x W x 3 float, 0..255)."""
    yy, xx = np.mgrid[0:h, 0:w]
    light = ((yy // cell + xx // cell) % 2 == 0)
    return np.where(light[..., None], 204.0, 153.0) * np.ones(3)


def audio(out_dir, name: str, wave: np.ndarray, rate: int, role: str, title: str, seconds: float | None = None,
          **meta) -> dict:
    """[C, L] float audio (any scale: it is peak-normalised to -1 dBFS) as Ogg Vorbis through
    soundfile when installed, else 16-bit WAV; `seconds` keeps only the first seconds."""
    w = np.asarray(wave, np.float64)
    w = w[None] if w.ndim == 1 else w
    if seconds:
        w = w[:, :int(rate * seconds)]
    peak = float(np.abs(w).max(initial=0.0))
    w = w * (10 ** (-1 / 20) / peak if peak > 0 else 1.0)
    stem = name.rsplit(".", 1)[0]
    try:
        import soundfile

        buf = io.BytesIO()
        soundfile.write(buf, w.T.astype(np.float32), rate, format="OGG", subtype="VORBIS")
        name, data = stem + ".ogg", buf.getvalue()
    except (ImportError, RuntimeError, TypeError):  # no libsndfile with Vorbis here: plain PCM
        import wave as wavmod

        buf = io.BytesIO()
        with wavmod.open(buf, "wb") as fh:
            fh.setnchannels(w.shape[0])
            fh.setsampwidth(2)
            fh.setframerate(rate)
            fh.writeframes((np.clip(w.T, -1, 1) * 32767).astype("<i2").tobytes())
        name, data = stem + ".wav", buf.getvalue()
    _write(out_dir, name, data)
    return record(out_dir, name, "audio", role, title, seconds=round(w.shape[1] / rate, 3), **meta)


def structure(out_dir, name: str, pdb_text: str, role: str, title: str, **meta) -> dict:
    """A PDB file (B-factor column free for a per-residue score the viewer colours by)."""
    _write(out_dir, name, pdb_text.encode("ascii"))
    return record(out_dir, name, "structure", role, title, format="pdb", **meta)


def series(out_dir, name: str, x: Sequence[float], lines: Mapping[str, Sequence[float]], role: str, title: str,
           x_title: str, y_title: str, better: str = "", **meta) -> dict:
    """Lines over a common x (e.g. a score per residue): the values travel in the record (the
    HTML draws them) and as a CSV file beside the report (the Markdown links it)."""
    head = [x_title, *lines]
    rows = [",".join(_csv(v) for v in [xv, *(ln[i] for ln in lines.values())]) for i, xv in enumerate(x)]
    _write(out_dir, name, ("\n".join([",".join(_csv(h) for h in head), *rows]) + "\n").encode("utf-8"))
    return record(out_dir, name, "series", role, title, x=[float(v) for v in x],
                  lines={k: [float(v) for v in ln] for k, ln in lines.items()}, x_title=x_title, y_title=y_title,
                  better=better, **meta)


def _csv(v) -> str:
    text = f"{v:.6g}" if isinstance(v, float) else str(v)
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text
