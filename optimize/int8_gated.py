"""INT8 behind the model's drift gate: per-layer localisation in the model's own terms and a
search for the fewest groups kept in FP32 (xopt.optimize.precision_search).

Static QDQ calibrates in one streamed pass for every method asked (xopt.optimize.calibration:
MinMax, percentile, entropy, memory bounded) and lets the gate choose the method and
per-channel weights; dynamic INT8 (weights offline, activations at run time) needs no
calibration. Either way the groups are the spec's readable units, each evaluated build is
timed, and the manifest records what stayed FP32 and why.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from xopt.errors import UserError
from xopt.optimize import calibration, precision_search as ps
from xopt.optimize.base import Option, OptionSet, Pass, register_pass

_QTYPES = {"uint8": "QUInt8", "int8": "QInt8"}


def _extra(opts) -> dict:
    out = {}
    for item in opts["extra_options"]:
        key, _, value = item.partition("=")
        lowered = value.lower()
        out[key] = True if lowered == "true" else False if lowered == "false" else value
    return out


class Int8GatedPass(Pass):
    name = "int8-gated"
    description = ("INT8 (static QDQ or dynamic) whose worst layer groups, ranked by the model's own drift, "
                   "stay FP32 until the drift gate passes; calibration method chosen by the gate, memory bounded")
    options = OptionSet([
        Option("mode", "str", "static", "static (calibrated QDQ) or dynamic (weights only)", ("static", "dynamic")),
        Option("op_types", "list", ["Conv", "ConvTranspose"], "op types to quantize"),
        Option("calibrate_methods", "list", list(calibration.METHODS), "calibration methods the gate chooses "
               "from (minmax, percentile, entropy)"),
        Option("per_channel", "str", "auto", "per-output-channel weight scales (auto: the gate chooses)",
               ("auto", "true", "false")),
        Option("calib_samples", "int", 4, "calibration inputs"),
        Option("calib_memory_mb", "float", 1024.0, "most memory for extra calibration outputs per run"),
        Option("percentile", "float", 99.999, "percentile of the percentile calibration"),
        Option("activation_type", "str", "uint8", "activation integer type", tuple(_QTYPES)),
        Option("weight_type", "str", "int8", "weight integer type", tuple(_QTYPES)),
        Option("reduce_range", "bool", False, "7-bit weights: no u8s8 saturation on x86 CPUs without VNNI"),
        Option("quantize_bias", "bool", True, "quantize bias to INT32 (TensorRT-RTX needs false)"),
        Option("nodes_to_exclude", "list", [], "node names always kept in FP32"),
        Option("extra_options", "list", [], "ONNX Runtime quantizer extra_options, KEY=VALUE"),
        Option("named_groups_only", "bool", False, "search only the nodes the spec's precision_group names; "
               "the others are quantized"),
        *ps.gate_options(),
    ])

    def apply(self, src: Path, dst: Path, opts, ctx) -> dict:
        import onnx

        from xopt.registry import get_model

        spec = get_model(ctx.model)
        static = opts["mode"] == "static"
        if static and ctx.calibration is None:
            raise UserError(f"model {ctx.model} provides no calibration data", "use mode dynamic")
        model = onnx.load(str(src), load_external_data=False)
        never = set(opts["nodes_to_exclude"]) | set(spec.fp32_nodes(model) if spec.fp32_nodes else [])
        groups = ps.spec_groups(spec, model, opts["op_types"], opts["group_depth"], never,
                                named_only=opts["named_groups_only"])
        if not groups:
            raise UserError(f"no {', '.join(opts['op_types'])} node to quantize", "check the op_types option")
        facts: dict = {"mode": opts["mode"], "always_fp32_nodes": len(never)}
        ev, judge, gate_facts = ps.setup(spec, src, opts, ctx)
        facts.update(gate_facts)
        if not judge.applied:  # nothing to choose by: the spec's first method, per-channel weights
            opts = {**opts, "calibrate_methods": [m for m in opts["calibrate_methods"] if m in calibration.METHODS][:1],
                    "per_channel": "true" if opts["per_channel"] == "auto" else opts["per_channel"]}
        cap = None if opts["max_fp32_groups"] < 0 else opts["max_fp32_groups"]
        search = ps.Search(None, groups, ev, judge, cap, "INT8", opts["localise"] == "always")
        methods = [m for m in opts["calibrate_methods"] if m in calibration.METHODS] or ["minmax"]
        trials = len(methods) * (2 if opts["per_channel"] == "auto" else 1) if static else 0
        trials = 0 if trials == 1 else trials
        with tempfile.TemporaryDirectory(dir=ctx.workdir) as tmp, \
                ps.counted(f"{spec.name}: INT8 behind the {spec.gate.key} gate", ev, trials + search.planned_builds()):
            tmp = Path(tmp)
            q = _Quantizer(src, tmp, opts, never)
            if static:
                tensors, infos = calibration.candidate_tensors(model, set(opts["op_types"]))
                feeds = list(ctx.calibration(opts["calib_samples"]))
                found, cal_facts = calibration.ranges(src, tensors, infos, feeds, methods, opts["calib_memory_mb"],
                                                      opts["percentile"])
                facts.update(cal_facts)
                facts["calibration_trials"] = q.choose(found, ev, judge)
                facts["calibration"] = {"method": q.method, "per_channel": q.per_channel}
            search.make = q.build
            best, kept, found_facts = search.run(model, src)
            Path(best).replace(dst)
        del model
        facts.update(found_facts)
        return facts


class _Quantizer:
    def __init__(self, src: Path, tmp: Path, opts, never: set[str]):
        self.src, self.tmp, self.opts, self.never = src, tmp, opts, never
        self.count, self.cache, self.method = 0, None, None
        self.per_channel = opts["per_channel"] == "true"

    def choose(self, found: dict, ev, judge) -> list[dict]:
        """The calibration method and per-channel choice whose all-INT8 build is closest to FP32."""
        pcs = [True, False] if self.opts["per_channel"] == "auto" else [self.opts["per_channel"] == "true"]
        if len(found) == 1 and len(pcs) == 1:  # one setting: nothing to choose, no trial build
            (self.method, found_ranges), = found.items()
            self.per_channel = pcs[0]
            self.cache = calibration.save_cache(found_ranges, self.tmp / f"ranges-{self.method}.json")
            return []
        trials, best = [], None
        for method, found_ranges in found.items():
            cache = calibration.save_cache(found_ranges, self.tmp / f"ranges-{method}.json")
            for pc in pcs:
                self.cache, self.per_channel, self.method = cache, pc, method
                path = self.build([])
                m = ev.measure(path)
                path.unlink()
                trials.append({"method": method, "per_channel": pc, "drift": m["value"], "speedup": m["speedup"],
                               "passed": judge.ok(m["value"])})
                if best is None or judge.better(m["value"], best[2]):
                    best = (method, pc, m["value"], cache)
        self.method, self.per_channel, _, self.cache = best
        return trials

    def build(self, fp32_nodes: list[str]) -> Path:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

        self.count += 1
        out = self.tmp / f"q{self.count}.onnx"
        o = self.opts
        exclude = sorted(self.never | set(fp32_nodes)) or None
        if o["mode"] == "dynamic":
            quantize_dynamic(str(self.src), str(out), op_types_to_quantize=o["op_types"],
                             per_channel=self.per_channel, weight_type=getattr(QuantType, _QTYPES[o["weight_type"]]),
                             nodes_to_exclude=exclude, reduce_range=o["reduce_range"], extra_options=_extra(o))
            return out
        quantize_static(str(self.src), str(out), None, quant_format=QuantFormat.QDQ, per_channel=self.per_channel,
                        activation_type=getattr(QuantType, _QTYPES[o["activation_type"]]),
                        weight_type=getattr(QuantType, _QTYPES[o["weight_type"]]),
                        calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=o["op_types"],
                        nodes_to_exclude=exclude, reduce_range=o["reduce_range"],
                        calibration_cache_path=str(self.cache),
                        extra_options={"QuantizeBias": o["quantize_bias"],
                                       "WeightSymmetric": o["weight_type"] == "int8", **_extra(o)})
        return out


register_pass(Int8GatedPass())
