"""Static INT8 QDQ behind an accuracy gate, with calibration memory bounded.

ONNX Runtime's calibrator adds every calibrated tensor as a graph output and keeps the
results of all samples: on HTDemucs that peaked at 12.8 GB for two segments. Here the
activation ranges are streamed instead: the tensors are split into groups whose summed
size stays under `calib_memory_mb`, each group is run over the calibration feeds with
running min/max, and the ranges go to the quantizer through its calibration cache.

The gate uses the model's own drift metric (spec.drift, a dB figure such as the worst
stem's SDR against FP32) on held-out feeds, turned into the quality a model separating
at `nominal_sdr` dB would lose: drop = 10·log10(1 + 10^((nominal − parity)/10)) (an error
`parity` dB below the output, uncorrelated with the model's own error). Layer groups
(module paths from the exporter's name scopes) are ranked by the drop each causes alone;
the worst stay FP32 until the whole graph is within `max_drop`.
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np

from xopt.errors import UserError
from xopt.optimize.base import Option, OptionSet, Pass, register_pass

_QTYPES = {"uint8": "QUInt8", "int8": "QInt8"}


def estimated_drop(parity_db: float, nominal_db: float) -> float:
    if not math.isfinite(parity_db):
        return 0.0 if parity_db > 0 else float("inf")
    return 10.0 * math.log10(1.0 + 10.0 ** ((nominal_db - parity_db) / 10.0))


def _value_infos(model) -> dict:
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

    infos = _value_infos(model)
    inits = {i.name for i in model.graph.initializer}
    names = []
    for node in model.graph.node:
        if node.op_type in op_types:
            for t in list(node.input) + list(node.output):
                vi = infos.get(t)
                if t and t not in inits and vi is not None and vi.type.tensor_type.elem_type == TensorProto.FLOAT:
                    names.append(t)
    return list(dict.fromkeys(names)), infos


def _nbytes(vi, fallback: int) -> int:
    dims = vi.type.tensor_type.shape.dim
    if not dims:
        return fallback
    n = 1
    for i, d in enumerate(dims):
        if d.HasField("dim_value"):
            n *= d.dim_value
        elif i != 0:  # a symbolic batch is 1 in calibration; other symbols are unknown
            return fallback
    return 4 * n


def stream_ranges(path: Path, tensors: list[str], infos: dict, feeds: list[dict], budget_mb: float,
                  ort_options: dict | None = None) -> tuple[dict, dict]:
    """{tensor: (min, max)} over `feeds`, running at most ~budget_mb of extra outputs at a time."""
    import onnx

    from xopt.runtime.backends.ort import OrtSession

    budget = max(1, int(budget_mb * 2 ** 20))
    groups, current, size = [], [], 0
    for t in tensors:
        nb = _nbytes(infos[t], budget // 4)
        if current and size + nb > budget:
            groups.append(current)
            current, size = [], 0
        current.append(t)
        size += nb
    if current:
        groups.append(current)
    base = onnx.load(str(path))
    outputs = {o.name for o in base.graph.output}
    lo = {t: np.inf for t in tensors}
    hi = {t: -np.inf for t in tensors}
    with tempfile.TemporaryDirectory() as tmp:
        for k, group in enumerate(groups):
            model = onnx.ModelProto()
            model.CopyFrom(base)
            model.graph.output.extend([infos[t] for t in group if t not in outputs])
            aug = Path(tmp) / f"aug{k}.onnx"
            onnx.save(model, str(aug))
            del model
            with OrtSession(aug, **(ort_options or {})) as sess:
                sess.output_names = list(dict.fromkeys(group))
                for feed in feeds:
                    for t, v in sess.run(feed).items():
                        lo[t] = min(lo[t], float(np.min(v)))
                        hi[t] = max(hi[t], float(np.max(v)))
            aug.unlink()
    return {t: (np.float32(lo[t]), np.float32(hi[t])) for t in tensors}, {"calibration_groups": len(groups)}


def layer_groups(model, op_types, depth: int) -> dict[str, list[str]]:
    """Quantizable nodes grouped by module path: the first `depth` parts of the weight's name
    (exporters name parameters by module path, e.g. model.encoder.0.conv.weight)."""
    groups: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.op_type in op_types:
            weight = node.input[1] if len(node.input) > 1 else ""
            module = weight.rsplit(".", 1)[0] if "." in weight else ""
            key = ".".join(module.split(".")[:depth]) if module else node.name
            groups.setdefault(key, []).append(node.name)
    return groups


class Int8GatedPass(Pass):
    name = "int8-gated"
    description = ("static INT8 QDQ of the chosen op types; layer groups costing more than max_drop dB of "
                   "the model's drift metric stay FP32; calibration memory bounded")
    options = OptionSet([
        Option("op_types", "list", ["Conv", "ConvTranspose"], "op types to quantize"),
        Option("max_drop", "float", 0.5, "largest estimated quality loss in dB (see nominal_sdr)"),
        Option("nominal_sdr", "float", 9.0, "quality (dB) of the FP32 model the drop is estimated for "
               "(HTDemucs scores ~9 dB SDR on MUSDB)"),
        Option("metric", "str", "sdr_min_db", "the model's drift key (dB against FP32, higher is closer)"),
        Option("calib_samples", "int", 2, "calibration inputs"),
        Option("gate_samples", "int", 1, "held-out inputs the gate measures on"),
        Option("calib_memory_mb", "float", 1024.0, "most memory for extra calibration outputs per run"),
        Option("group_depth", "int", 3, "module-path depth that groups layers (3: model.encoder.0)"),
        Option("per_channel", "bool", True, "per-output-channel weight scales"),
        Option("activation_type", "str", "uint8", "activation integer type", tuple(_QTYPES)),
        Option("quantize_bias", "bool", True, "quantize bias to INT32 (TensorRT-RTX needs false)"),
    ])

    def apply(self, src: Path, dst: Path, opts, ctx) -> dict:
        import onnx

        from xopt.registry import get_model

        if ctx.calibration is None:
            raise UserError(f"model {ctx.model} provides no calibration data", "use a dynamic INT8 variant")
        spec = get_model(ctx.model)
        n_cal, n_gate = opts["calib_samples"], opts["gate_samples"]
        feeds = list(ctx.calibration(n_cal + n_gate))
        calib, gate_feeds = feeds[:n_cal], feeds[n_cal:] or feeds[:1]
        model = onnx.load(str(src), load_external_data=False)
        tensors, infos = candidate_tensors(model, set(opts["op_types"]))
        groups = layer_groups(model, set(opts["op_types"]), opts["group_depth"])
        del model
        if not tensors:
            raise UserError(f"no {', '.join(opts['op_types'])} node to quantize", "check the op_types option")
        ranges, facts = stream_ranges(src, tensors, infos, calib, opts["calib_memory_mb"])
        with tempfile.TemporaryDirectory(dir=ctx.workdir) as tmp:
            gate = _Gate(src, Path(tmp), ranges, opts, spec, gate_feeds)
            best = gate.search(groups)
            Path(best).replace(dst)
        return {**facts, **gate.facts}


class _Gate:
    def __init__(self, src: Path, tmp: Path, ranges: dict, opts, spec, feeds):
        from onnxruntime.quantization.calibrate import CalibrationMethod, TensorsData, save_tensors_data

        from xopt.runtime.backends.ort import OrtSession

        self.src, self.tmp, self.opts, self.spec, self.feeds = src, tmp, opts, spec, feeds
        self.cache = tmp / "ranges.json"
        save_tensors_data(TensorsData(CalibrationMethod.MinMax, ranges), self.cache)
        with OrtSession(src) as sess:
            self.refs = [sess.run(f) for f in feeds]
        self.count = 0
        self.facts: dict = {}

    def quantize(self, exclude: list[str]) -> Path:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        self.count += 1
        out = self.tmp / f"q{self.count}.onnx"
        quantize_static(str(self.src), str(out), None, quant_format=QuantFormat.QDQ,
                        per_channel=self.opts["per_channel"],
                        activation_type=getattr(QuantType, _QTYPES[self.opts["activation_type"]]),
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                        op_types_to_quantize=self.opts["op_types"], nodes_to_exclude=exclude or None,
                        calibration_cache_path=str(self.cache),
                        extra_options={"QuantizeBias": self.opts["quantize_bias"], "WeightSymmetric": True})
        return out

    def drop(self, exclude: list[str]) -> tuple[float, Path]:
        from xopt.runtime.backends.ort import OrtSession

        path = self.quantize(exclude)
        with OrtSession(path) as sess:
            outs = [sess.run(f) for f in self.feeds]
        key = self.opts["metric"]
        scores = [float(self.spec.drift(r, o, f)[key]) for r, o, f in zip(self.refs, outs, self.feeds)]
        parity = min(scores)
        return estimated_drop(parity, self.opts["nominal_sdr"]), path

    def search(self, groups: dict[str, list[str]]) -> Path:
        limit = self.opts["max_drop"]
        drop, path = self.drop([])
        all_quantized = drop
        ranked: list[tuple[float, str]] = []
        kept: list[str] = []
        if drop > limit:
            everything = [n for nodes in groups.values() for n in nodes]
            for g, nodes in groups.items():
                alone, p = self.drop([n for n in everything if n not in set(nodes)])
                p.unlink()
                ranked.append((alone, g))
            ranked.sort(reverse=True)
            path.unlink()
            drop, path, kept = self._fewest_fp32(groups, ranked, limit)
        self.facts = {"estimated_drop_db": round(drop, 3), "max_drop_db": limit,
                      "all_quantized_drop_db": round(all_quantized, 3), "fp32_groups": kept,
                      "quantized_groups": len(groups) - len(kept), "gate_evaluations": self.count,
                      "sensitivity_db": {g: round(d, 3) for d, g in ranked}}
        return path

    def _fewest_fp32(self, groups, ranked, limit):
        """Smallest k such that the k most sensitive groups in FP32 meet the limit (bisection,
        assuming more FP32 never hurts), then verified."""
        lo, hi = 1, len(ranked)
        found = None
        while lo <= hi:
            k = (lo + hi) // 2
            exclude = [n for _, g in ranked[:k] for n in groups[g]]
            drop, path = self.drop(exclude) if k < len(ranked) else (0.0, None)
            if drop <= limit:
                if found and found[1]:
                    found[1].unlink()
                found, hi = (drop, path, k), k - 1
            else:
                if path:
                    path.unlink()
                lo = k + 1
        if found is None or found[2] == len(ranked):
            raise UserError(f"no set of INT8 layers keeps the estimated drop under {limit} dB",
                            "raise --max-drop, or use the dynamic int8 variant (transformer only)")
        drop, path, k = found
        return drop, path, [g for _, g in ranked[:k]]


register_pass(Int8GatedPass())
