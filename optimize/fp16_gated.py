"""FP16 with FP32 islands found by the model's drift gate: the fp16 pass's conversion, then the
spec's readable units (the groups its `precision_group` names) ranked by how much the domain
drift improves when each alone stays FP32, and the fewest such islands that pass the gate
(xopt.optimize.precision_search). Nodes the spec does not group follow the fp16 pass."""
from __future__ import annotations

import tempfile
from pathlib import Path

from xopt.errors import UserError
from xopt.optimize import precision_search as ps
from xopt.optimize.base import Option, OptionSet, Pass, register_pass
from xopt.optimize.fp16 import Fp16Pass

_BASE = Fp16Pass()


class Fp16GatedPass(Pass):
    name = "fp16-gated"
    description = ("FP16 whose worst units, ranked by the model's own drift, stay FP32 islands until the drift "
                   "gate passes")
    options = OptionSet([
        *_BASE.options.options,
        Option("op_types", "list", [], "op types the units are made of (empty: every op)"),
        *ps.gate_options(),
    ])

    def apply(self, src: Path, dst: Path, opts, ctx) -> dict:
        import onnx

        from xopt.registry import get_model

        spec = get_model(ctx.model)
        if spec.precision_group is None:
            raise UserError(f"model {spec.name} names no precision groups for the FP16 search",
                            "use the plain fp16 variant")
        model = onnx.load(str(src), load_external_data=False)
        groups = ps.spec_groups(spec, model, opts["op_types"], opts["group_depth"], named_only=True)
        if not groups:
            raise UserError(f"the {spec.name} graph has none of the units its spec names", "use the fp16 variant")
        base = _BASE
        base_opts = {o.name: opts[o.name] for o in base.options.options}
        ev, judge, facts = ps.setup(spec, src, opts, ctx)
        with tempfile.TemporaryDirectory(dir=ctx.workdir) as tmp:
            count = [0]

            def build(fp32_nodes: list[str]) -> Path:
                count[0] += 1
                out = Path(tmp) / f"h{count[0]}.onnx"
                base.apply(src, out, {**base_opts, "node_block_list": [*base_opts["node_block_list"], *fp32_nodes]},
                           ctx)
                return out

            cap = None if opts["max_fp32_groups"] < 0 else opts["max_fp32_groups"]
            search = ps.Search(build, groups, ev, judge, cap, "FP16", opts["localise"] == "always")
            with ps.counted(f"{spec.name}: FP16 behind the {spec.gate.key} gate", ev, search.planned_builds()):
                best, kept, found = search.run(model, src)
            Path(best).replace(dst)
        return {**facts, **found}


register_pass(Fp16GatedPass())
