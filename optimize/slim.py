"""Graph simplification with onnxslim (constant folding, dead-node and shape-op cleanup)."""
from __future__ import annotations

from pathlib import Path

from xopt.optimize.base import Option, OptionSet, Pass, register_pass


class SlimPass(Pass):
    name = "slim"
    description = "simplify the graph with onnxslim (constant folding, pattern fusion, dead nodes)"
    options = OptionSet([
        Option("fusion", "bool", True, "apply onnxslim's pattern fusions (off: folding and cleanup only)"),
    ])

    def apply(self, src: Path, dst: Path, opts, ctx) -> dict:
        import onnx
        import onnxslim

        model = onnx.load(str(src))
        n_before = len(model.graph.node)
        kwargs = {}
        if not opts["fusion"]:
            from onnxslim.core.pattern.registry import DEFAULT_FUSION_PATTERNS

            kwargs["skip_fusion_patterns"] = list(DEFAULT_FUSION_PATTERNS)
        slimmed = onnxslim.slim(model, **kwargs)
        onnx.save(slimmed, str(dst))
        return {"nodes_before": n_before, "nodes_after": len(slimmed.graph.node)}


register_pass(SlimPass())
