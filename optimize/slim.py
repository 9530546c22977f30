"""Graph simplification with onnxslim (constant folding, dead-node and shape-op cleanup)."""
from __future__ import annotations

from pathlib import Path

from xopt.extras import require
from xopt.optimize.base import Option, OptionSet, Pass, register_pass


class SlimPass(Pass):
    name = "slim"
    description = "simplify the graph with onnxslim (constant folding, pattern fusion, dead nodes)"
    options = OptionSet([
        Option("fusion", "bool", True, "apply onnxslim's pattern fusions (off: folding and cleanup only)"),
    ])

    def apply(self, src: Path, dst: Path, opts, ctx) -> dict:
        import onnx

        onnxslim = require("onnxslim", "export", "the slim pass")

        model = onnx.load(str(src))
        n_before = len(model.graph.node)
        kwargs = {}
        if not opts["fusion"]:
            from onnxslim.core.pattern.registry import DEFAULT_FUSION_PATTERNS

            kwargs["skip_fusion_patterns"] = list(DEFAULT_FUSION_PATTERNS)
        slimmed = onnxslim.slim(model, **kwargs)
        _dedupe_value_info(slimmed)
        onnx.save(slimmed, str(dst))
        return {"nodes_before": n_before, "nodes_after": len(slimmed.graph.node)}


def _dedupe_value_info(model) -> None:
    """onnxslim (0.1.98) can list a tensor's value_info twice; the fp16 pass then retypes one copy
    and ORT rejects the Cast around a blocked Resize ("Type (tensor(float)) of output arg ... does
    not match expected type (tensor(float16))"). Keep the first entry of each name."""
    seen, keep = set(), []
    for v in model.graph.value_info:
        if v.name not in seen:
            seen.add(v.name)
            keep.append(v)
    if len(keep) != len(model.graph.value_info):
        del model.graph.value_info[:]
        model.graph.value_info.extend(keep)


register_pass(SlimPass())
