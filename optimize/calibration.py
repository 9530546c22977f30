"""Activation ranges for static INT8 with the memory bounded.

ONNX Runtime's calibrators add every calibrated tensor as a graph output and keep each
sample's results until the end: 12.8 GB on HTDemucs for two segments, 15 GB for percentile
calibration of MODNet at 512². Here the tensors are split into groups whose summed size stays
under a budget; each group runs over the feeds one at a time and its statistics are folded in
as they come (running min/max, or ONNX Runtime's own HistogramCollector for percentile and
entropy), so memory is one group's outputs for one feed.
"""
from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np

METHODS = ("minmax", "percentile", "entropy")


def value_infos(model) -> dict:
    import onnx

    if not model.graph.value_info:
        model = onnx.shape_inference.infer_shapes(model)
    infos = {v.name: v for v in model.graph.value_info}
    infos.update({v.name: v for v in model.graph.output})
    infos.update({v.name: v for v in model.graph.input})
    return infos


def candidate_tensors(model, op_types) -> tuple[list[str], dict]:
    """Float inputs/outputs of the nodes to quantize (what ORT's calibrator would calibrate)."""
    from onnx import TensorProto

    infos = value_infos(model)
    inits = {i.name for i in model.graph.initializer}
    names = []
    for node in model.graph.node:
        if node.op_type in op_types:
            for t in list(node.input) + list(node.output):
                vi = infos.get(t)
                if t and t not in inits and vi is not None and vi.type.tensor_type.elem_type == TensorProto.FLOAT:
                    names.append(t)
    return list(dict.fromkeys(names)), infos


def _nbytes(vi, fallback: int, feed_elems: int) -> int:
    dims = vi.type.tensor_type.shape.dim
    if not dims:
        return fallback
    n = 1
    for i, d in enumerate(dims):
        if d.HasField("dim_value"):
            n *= d.dim_value
        elif i != 0:  # a symbolic batch is 1 in calibration; a symbolic size scales with the input
            return max(fallback, 4 * feed_elems)
    return 4 * n


def _split(tensors, infos, budget: int, feed_elems: int) -> list[list[str]]:
    groups, current, size = [], [], 0
    for t in tensors:
        nb = _nbytes(infos[t], budget // 4, feed_elems)
        if current and size + nb > budget:
            groups.append(current)
            current, size = [], 0
        current.append(t)
        size += nb
    return groups + ([current] if current else [])


class _MinMax:
    def __init__(self, tensors):
        self.lo = {t: np.inf for t in tensors}
        self.hi = {t: -np.inf for t in tensors}

    def collect(self, values: dict) -> None:
        for t, v in values.items():
            self.lo[t] = min(self.lo[t], float(np.min(v)))
            self.hi[t] = max(self.hi[t], float(np.max(v)))

    def result(self) -> dict:
        return {t: (self.lo[t], self.hi[t]) for t in self.lo}


class _Histogram:
    """ONNX Runtime's HistogramCollector (percentile, entropy), fed one feed at a time."""

    def __init__(self, method: str, percentile: float, symmetric: bool):
        from onnxruntime.quantization.calibrate import HistogramCollector

        bins = 2048 if method == "percentile" else 128
        self.c = HistogramCollector(method, symmetric, bins, 128, percentile, "same")

    def collect(self, values: dict) -> None:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints a line per call
            self.c.collect({t: [np.asarray(v, np.float32)] for t, v in values.items()})

    def result(self) -> dict:
        with contextlib.redirect_stdout(io.StringIO()):
            found = self.c.compute_collection_result()
        return {t: (float(r[0]), float(r[1])) for t, r in found.items()}


def ranges(path: Path, tensors: list[str], infos: dict, feeds: list[dict], methods=("minmax",),
           budget_mb: float = 1024.0, percentile: float = 99.999, symmetric: bool = False,
           ort_options: dict | None = None) -> tuple[dict, dict]:
    """{method: {tensor: (min, max)}} over `feeds`, every method from the same streamed runs, at
    most ~budget_mb of extra outputs at a time."""
    import onnx

    from xopt.runtime.backends.ort import OrtSession

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown calibration method {unknown[0]!r}")
    feed_elems = max((int(np.prod(v.shape)) for f in feeds for v in f.values()), default=1)
    groups = _split(tensors, infos, max(1, int(budget_mb * 2 ** 20)), feed_elems)
    base = onnx.load(str(path))
    outputs = {o.name for o in base.graph.output}
    found: dict = {m: {} for m in methods}
    with tempfile.TemporaryDirectory() as tmp:
        for k, group in enumerate(groups):
            model = onnx.ModelProto()
            model.CopyFrom(base)
            model.graph.output.extend([infos[t] for t in group if t not in outputs])
            aug = Path(tmp) / f"aug{k}.onnx"
            onnx.save(model, str(aug))
            del model
            stats = {m: _MinMax(group) if m == "minmax" else _Histogram(m, percentile, symmetric) for m in methods}
            with OrtSession(aug, **(ort_options or {})) as sess:
                sess.output_names = list(dict.fromkeys(group))
                for feed in feeds:
                    values = sess.run(feed)
                    for s in stats.values():
                        s.collect(values)
                    del values
            for m, s in stats.items():
                found[m].update(s.result())
            aug.unlink()
    out = {m: {t: (np.float32(lo), np.float32(hi)) for t, (lo, hi) in r.items()} for m, r in found.items()}
    return out, {"calibration_groups": len(groups), "calibration_methods": list(methods),
                 "calibration_feeds": len(feeds), "calibration_shapes": {k: list(v.shape) for k, v in feeds[0].items()},
                 "calibration_memory_mb": budget_mb}


def save_cache(found: dict, path: Path) -> Path:
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorsData, save_tensors_data

    save_tensors_data(TensorsData(CalibrationMethod.MinMax, found), path)
    return path
