"""Label-free checks on MODNet mattes: they flag a broken pipeline without any ground truth.

- coverage: the foreground share of a matte. 0 % or 100 % on a portrait means the model saw
  something other than what it was trained on (colour order, normalisation, a blank frame).
- undecided: the share of pixels that are neither foreground nor background (0.05 < alpha
  < 0.95). A trained MODNet keeps that to the hair and edge band; a mushy matte over most of
  the frame is the usual sign of inputs normalised the wrong way.
- flicker (video): the mean absolute difference of adjacent mattes, beside how much the
  picture itself changed: a matte that changes more than the picture flickers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

UNDECIDED_MAX = 0.5
FLICKER_FLOOR = 0.02  # mean |d alpha| per frame below this is invisible whatever the picture does


def _check(name, value, unit, expected, ok, message, info) -> dict:
    if not ok and (info or {}).get("weights", {}).get("kind") == "seeded-random":
        message += " (expected with seeded-random weights)"
    return {"name": name, "value": round(float(value), 4), "unit": unit, "expected": expected, "ok": bool(ok),
            "message": "" if ok else message}


def matte_checks(matte: np.ndarray, info: Mapping[str, Any] | None = None) -> list[dict]:
    m = np.asarray(matte, np.float32)
    fg = float(np.mean(m > 0.5))
    undecided = float(np.mean((m > 0.05) & (m < 0.95)))
    empty = fg < 1e-3 or fg > 1 - 1e-3
    return [
        _check("matte coverage", 100 * fg, "%", "between 0.1 % and 99.9 %", not empty,
               f"the matte is {'empty' if fg < 0.5 else 'all foreground'} ({100 * fg:.1f} % foreground): the input "
               "was probably not RGB normalised to [-1, 1] as MODNet expects, or holds no person", info),
        _check("undecided pixels", 100 * undecided, "%", f"at most {100 * UNDECIDED_MAX:.0f} %",
               undecided <= UNDECIDED_MAX,
               f"{100 * undecided:.0f} % of the matte is neither foreground nor background: the input was probably "
               "normalised or colour-ordered differently from what the model expects", info),
    ]


def _luma(frame) -> np.ndarray:
    from xopt.models.modnet.image_io import to_rgb

    rgb = to_rgb(frame).astype(np.float32) / 255.0
    return rgb @ np.array([0.299, 0.587, 0.114], np.float32)


def flicker(mattes: Iterable[np.ndarray], frames: Iterable[Any] | None = None) -> dict:
    """{"flicker": mean |alpha_t - alpha_t-1|, "picture_change": mean |luma_t - luma_t-1| (or
    None), "pairs": n}, streaming (one frame pair in memory at a time)."""
    diffs, picture = [], []
    prev = None
    for m in mattes:
        m = np.asarray(m, np.float32)
        if prev is not None and prev.shape == m.shape:
            diffs.append(float(np.mean(np.abs(m - prev))))
        prev = m
    if frames is not None:
        prev = None
        for f in frames:
            y = _luma(f)
            if prev is not None and prev.shape == y.shape:
                picture.append(float(np.mean(np.abs(y - prev))))
            prev = y
    return {"flicker": float(np.mean(diffs)) if diffs else float("nan"),
            "picture_change": float(np.mean(picture)) if picture else None, "pairs": len(diffs)}


def flicker_check(stats: Mapping[str, Any], info: Mapping[str, Any] | None = None) -> dict:
    f, pic = stats["flicker"], stats.get("picture_change")
    ok = f <= FLICKER_FLOOR or (pic is not None and f <= pic)
    beside = f" while the picture changes by {pic:.3f}" if pic is not None else ""
    return _check("temporal flicker", f, "mean |d alpha| per frame",
                  f"at most {FLICKER_FLOOR} or the picture's own change", ok,
                  f"the matte changes by {f:.3f} per frame{beside}: temporal flicker (frames matted independently "
                  "at an unstable resolution, or a per-frame normalisation that varies)", info)


def checks(raw, output, info: Mapping[str, Any] | None = None) -> list[dict]:
    """`raw`/`output`: one image and its matte, or lists of frames and their mattes (flicker)."""
    if isinstance(output, (list, tuple)):
        out = matte_checks(output[0], info) if output else []
        if len(output) >= 2:
            out.append(flicker_check(flicker(output, raw if isinstance(raw, (list, tuple)) else None), info))
        return out
    return matte_checks(output, info)


def run_checks(src: Path, written: list[Path], info: Mapping[str, Any] | None = None) -> list[dict]:
    """Checks on what `xopt run modnet` wrote: one matte image, a matte video, or a PNG sequence."""
    from xopt.models.modnet.eval_data import read_alpha
    from xopt.models.modnet.image_io import STILL_IMAGE_SUFFIXES

    if len(written) == 1 and written[0].is_file() and written[0].suffix.lower() in STILL_IMAGE_SUFFIXES:
        return matte_checks(read_alpha(written[0]), info)
    if len(written) == 1 and written[0].is_dir():
        files = sorted(p for p in written[0].iterdir() if p.suffix.lower() == ".png")
        mattes: Iterable = (read_alpha(p) for p in files)
    elif len(written) > 1:
        mattes = (read_alpha(p) for p in sorted(written))
    else:
        mattes = _video_frames(written[0], grey=True)
    first = []

    def remember(it):
        for m in it:
            if not first:
                first.append(m)
            yield m

    stats = flicker(remember(mattes), _video_frames(src))
    out = matte_checks(first[0], info) if first else []
    if stats["pairs"]:
        out.append(flicker_check(stats, info))
    return out


def _video_frames(path: Path, grey: bool = False):
    from xopt.models.modnet.video_io import read_frames  # as the pipeline read it: a cut file too

    for frame in read_frames(path, "gray" if grey else "rgb24"):
        yield frame.astype(np.float32) / 255.0 if grey else frame
