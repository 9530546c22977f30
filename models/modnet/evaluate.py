"""MODNet against ground truth (`xopt eval modnet`): the spec's EvalHooks.

An item is an image (pairs layouts) or a video (YouTube-VOS); its output is
{"mattes": {stem: H x W alpha}, "order": [stems in frame order]}. Scores per image are the
matting benchmarks' errors (matting_metrics) plus IoU at alpha > 0.5; a video's are their
means over its annotated frames plus dtSSD over consecutive annotated frames. The dataset's
aggregate is the mean over items (the benchmarks' convention).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from xopt.errors import UserError
from xopt.models.modnet import checks as label_free
from xopt.models.modnet import matting_metrics as mm
from xopt.models.modnet.eval_data import IMAGE_SUFFIXES, read_alpha, read_trimap

METRICS = {"iou": "higher", "sad": "lower", "mse": "lower", "mad": "lower", "grad": "lower", "conn": "lower",
           "dtssd": "lower"}


def predict(pipeline, item) -> dict:
    if item.meta.get("kind") == "video":
        order = item.meta["frames"]
        return {"mattes": {s: pipeline(p) for s, p in zip(order, item.input)}, "order": list(order)}
    return {"mattes": {item.name: pipeline(item.input)}, "order": [item.name]}


def _prediction_file(directory: Path, stem: str) -> Path:
    png = directory / f"{stem}.png"
    if png.exists():
        return png
    return next((directory / f"{stem}{s}" for s in IMAGE_SUFFIXES if (directory / f"{stem}{s}").exists()), png)


def prediction_paths(directory: Path, item) -> list[Path]:
    """DIR/<stem>.png per image; DIR/<video>/<frame>.png per annotated frame of a video."""
    if item.meta.get("kind") == "video":
        return [_prediction_file(Path(directory) / item.name, s) for s in item.reference]
    return [_prediction_file(Path(directory), item.name)]


def read_prediction(directory: Path, item) -> dict:
    if item.meta.get("kind") != "video":
        return {"mattes": {item.name: read_alpha(prediction_paths(directory, item)[0])}, "order": [item.name]}
    # every frame the predictions hold counts for flicker; the annotated ones are also scored
    folder = Path(directory) / item.name
    order = [s for s in item.meta["frames"] if _prediction_file(folder, s).exists()]
    return {"mattes": {s: read_alpha(_prediction_file(folder, s)) for s in order}, "order": order}


def _fit(pred: np.ndarray, ref: np.ndarray, name: str, notes: list) -> np.ndarray:
    if pred.shape == ref.shape:
        return pred
    from xopt.models.modnet.pipeline import area_resize

    notes.append(f"{name}: prediction {pred.shape[1]}x{pred.shape[0]} resized to the reference's "
                 f"{ref.shape[1]}x{ref.shape[0]}")
    return np.clip(area_resize(pred, ref.shape), 0.0, 1.0)


def _trimap(item, shape) -> np.ndarray | None:
    path = item.meta.get("trimap")
    if not path:
        return None
    trimap = read_trimap(path)
    if trimap.shape != tuple(shape):
        raise UserError(f"trimap {path} is {trimap.shape[1]}x{trimap.shape[0]}, its matte {shape[1]}x{shape[0]}",
                        "pass trimaps of the same size as the reference mattes")
    return trimap


def score(item, output: Mapping[str, Any]) -> dict:
    notes: list[str] = []
    if item.meta.get("kind") != "video":
        ref = read_alpha(item.reference)
        pred = _fit(np.asarray(output["mattes"][item.name], np.float32), ref, item.name, notes)
        return {**mm.matting_errors(pred, ref, _trimap(item, ref.shape)), "notes": notes}
    per, pairs, prev = [], [], None
    for stem in output["order"]:
        if stem not in item.reference:
            prev = None  # dtSSD compares consecutive annotated frames only
            continue
        ref = read_alpha(item.reference[stem])
        pred = _fit(np.asarray(output["mattes"][stem], np.float32), ref, f"{item.name}/{stem}", notes)
        per.append(mm.matting_errors(pred, ref))
        if prev is not None and prev[0].shape == pred.shape:
            pairs.append(mm.dtssd(pred, prev[0], ref, prev[1]))
        prev = (pred, ref)
    missing = [s for s in item.reference if s not in output["mattes"]]
    if missing:
        notes.append(f"{item.name}: {len(missing)} annotated frames have no prediction")
    if not per:
        raise UserError(f"video {item.name}: no annotated frame has a prediction", "predict the annotated frames")
    out = {k: float(np.mean([p[k] for p in per])) for k in per[0]}
    out["dtssd"] = float(np.mean(pairs)) if pairs else float("nan")
    out["frames_scored"] = len(per)
    return {**out, "notes": notes}


def aggregate(scores: list[dict]) -> dict:
    keys = [k for k in METRICS if any(k in s for s in scores)]
    out = {}
    for k in keys:
        vals = np.array([s[k] for s in scores if k in s], np.float64)
        vals = vals[np.isfinite(vals)]
        out[k] = float(vals.mean()) if vals.size else float("nan")
    return out


def item_checks(item, output: Mapping[str, Any], info: Mapping[str, Any] | None = None) -> list[dict]:
    mattes = [output["mattes"][s] for s in output["order"]]
    if item.meta.get("kind") != "video":
        return label_free.checks(item.input, mattes[0], info)
    frames = {s: p for s, p in zip(item.meta["frames"], item.input)}
    return label_free.checks([frames[s] for s in output["order"]], mattes, info)
