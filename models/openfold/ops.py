"""The Evoformer and extra-MSA stacks cut into chunkable operations, one ONNX graph per kind.

A block of either stack is nine residual updates. Each becomes one or two graphs over a
*chunk* of rows whose size is a dynamic dimension, so a host loop (host.py) can call them
over any number of chunks at any N and add each chunk's update into m or z in place:

    row_bias   z rows              -> pair bias [H, K, N] of the MSA row attention
    row_att    m rows, bias        -> m update (MSA row attention with pair bias)
    col_att    m columns           -> m update (column attention; global attention in the extra stack)
    msa_trans  m rows              -> m update
    opm_proj   m rows              -> a, b of the outer product mean (laid out [N, K, c])
    opm_rows   a rows, b           -> z update
    tm_proj    any block of z      -> one projection (a or b) of a triangle multiplication, channels first
    tm_tile    a rows, b rows, z   -> z update of one tile (the sum over k is done in FP32)
    ta_bias    z rows              -> triangle bias [H, K, N]
    ta_rows    z rows, bias        -> z update (triangle attention around the starting node)
    pair_trans z rows              -> z update

Every kind holds the weights of all blocks stacked ([B, ...] initializers) and takes the
block (or block x variant) `index` as an input, so one graph per kind serves the whole stack.
The math is OpenFold's own modules (their sub-modules are called with their parameters);
only the chunking and the order of the host's writes are ours, and that order keeps every
read on values the reference would read (see host.py). Inputs and outputs are FP32; the
compute precision is the variant's, with the FP32 islands of trunk.py.
"""
from __future__ import annotations

import copy
import functools

_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


@functools.lru_cache(maxsize=None)
def _classes():
    import torch

    from openfold.utils.tensor_utils import permute_final_dims

    from xopt.models.openfold.cpu import quiet
    from xopt.models.openfold.trunk import precision_islands

    class Op(torch.nn.Module):
        """One operation of one block; FP32 in and out, `precision` inside."""

        def __init__(self, precision: str):
            super().__init__()
            self.precision = precision

        @property
        def dt(self):
            return getattr(torch, _DTYPES[self.precision])

        def forward(self, *args):
            with quiet(), precision_islands(self.precision):
                args = [a.to(self.dt) if a.is_floating_point() else a for a in args]
                out = self.compute(*args)
            return tuple(o.float() for o in out) if isinstance(out, tuple) else out.float()

    class RowBias(Op):
        def __init__(self, att, precision):
            super().__init__(precision)
            self.ln, self.linear = att.layer_norm_z, att.linear_z

        def compute(self, z):
            return permute_final_dims(self.linear(self.ln(z)), (2, 0, 1))

    class RowAtt(Op):
        def __init__(self, att, precision):
            super().__init__(precision)
            self.ln, self.mha, self.inf = att.layer_norm_m, att.mha, att.inf

        def compute(self, m, mask, bias):
            mask_bias = (self.inf * (mask - 1))[..., :, None, None, :]
            x = self.ln(m)
            return self.mha(q_x=x, kv_x=x, biases=[mask_bias, bias.unsqueeze(0)])

    class Whole(Op):
        """A sub-module called as OpenFold calls it when it does not chunk (columns, transitions)."""

        def __init__(self, mod, precision, with_mask: bool):
            super().__init__(precision)
            self.mod, self.with_mask = mod, with_mask

        def compute(self, x, mask=None):
            return self.mod(x, mask=mask) if self.with_mask else self.mod(x)

    class OpmProj(Op):
        def __init__(self, opm, precision):
            super().__init__(precision)
            self.opm = opm

        def compute(self, m, mask):
            ln = self.opm.layer_norm(m)
            a = self.opm.linear_1(ln) * mask[..., None]
            b = self.opm.linear_2(ln) * mask[..., None]
            return a.transpose(0, 1), b.transpose(0, 1)

    class OpmRows(Op):
        def __init__(self, opm, precision):
            super().__init__(precision)
            self.opm = opm

        def compute(self, a_rows, b, mask_rows, mask):
            # mask_rows [S, K], mask [S, N]: the number of rows both residues are present in
            norm = torch.matmul(mask_rows.transpose(0, 1), mask)[..., None] + self.opm.eps
            return self.opm._opm(a_rows, b) / norm

    class TmProj(Op):
        def __init__(self, tm, side: str, precision):
            super().__init__(precision)
            self.ln = tm.layer_norm_in
            self.p, self.g = getattr(tm, f"linear_{side}_p"), getattr(tm, f"linear_{side}_g")

        def compute(self, z, mask):
            x = self.ln(z)
            # channels first, [c, K, J]: the tiles then multiply contiguous rows (a transposing
            # copy per tile cost ten times the matmul)
            return (mask[..., None] * torch.sigmoid(self.g(x)) * self.p(x)).permute(2, 0, 1)

    class TmTile(Op):
        def __init__(self, tm, precision):
            super().__init__(precision)
            self.ln_in, self.ln_out = tm.layer_norm_in, tm.layer_norm_out
            self.linear_z, self.linear_g = tm.linear_z, tm.linear_g

        def compute(self, a_rows, b_rows, z):
            # a [c, K, N], b [c, J, N]: x[i, j] = sum_k a[i, k] * b[j, k]; the sum grows with N: FP32
            x = torch.matmul(a_rows.float(), b_rows.float().transpose(1, 2))
            x = self.ln_out(x.permute(1, 2, 0).to(z.dtype))
            return self.linear_z(x) * torch.sigmoid(self.linear_g(self.ln_in(z)))

    class TaBias(Op):
        def __init__(self, ta, precision):
            super().__init__(precision)
            self.ln, self.linear = ta.layer_norm, ta.linear

        def compute(self, z):
            return permute_final_dims(self.linear(self.ln(z)), (2, 0, 1))

    class TaRows(Op):
        def __init__(self, ta, precision):
            super().__init__(precision)
            self.ln, self.mha, self.inf = ta.layer_norm, ta.mha, ta.inf

        def compute(self, z, mask, bias):
            x = self.ln(z)
            mask_bias = (self.inf * (mask - 1))[..., :, None, None, :]
            return self.mha(q_x=x, kv_x=x, biases=[mask_bias, bias.unsqueeze(0)])

    class Stacked(torch.nn.Module):
        """`ops` (same structure, one per block or block x variant) with their tensors stacked;
        forward(index, *inputs) runs op `index`."""

        def __init__(self, ops):
            super().__init__()
            self.template = ops[0]
            self.count = len(ops)
            tensors = [dict(op.named_parameters()) | dict(op.named_buffers()) for op in ops]
            self.names = list(tensors[0])
            for i, name in enumerate(self.names):
                self.register_buffer(f"w{i}", torch.stack([t[name].detach() for t in tensors]))
            self.template.requires_grad_(False)

        def forward(self, index, *inputs):
            idx = index.reshape(1).long()
            params = {n: torch.index_select(getattr(self, f"w{i}"), 0, idx)[0] for i, n in enumerate(self.names)}
            # torch.func.functional_call refuses traced modules: swap the tensors in by hand
            saved = []
            for name, value in params.items():
                owner, _, leaf = name.rpartition(".")
                mod = self.template.get_submodule(owner) if owner else self.template
                table = mod._parameters if leaf in mod._parameters else mod._buffers
                saved.append((table, leaf, table[leaf]))
                table[leaf] = value
            try:
                return self.template(*inputs)
            finally:
                for table, leaf, value in saved:
                    table[leaf] = value

    return {"RowBias": RowBias, "RowAtt": RowAtt, "Whole": Whole, "OpmProj": OpmProj, "OpmRows": OpmRows,
            "TmProj": TmProj, "TmTile": TmTile, "TaBias": TaBias, "TaRows": TaRows, "Stacked": Stacked}


def _island(low, orig, precision: str):
    """The FP32 original of a sub-module for ops that stay FP32 under low precision."""
    return (copy.deepcopy(orig).float(), "fp32") if precision != "fp32" else (low, precision)


# kind -> how one block's op is made from (block in the compute precision, FP32 block, precision);
# a list means several ops per block (the index is block * len + position)
def _builders():
    c = _classes()
    col = lambda b, o, p: c["Whole"](*_island(b.msa_att_col, o.msa_att_col, p), with_mask=True)  # noqa: E731
    return {
        "row_bias": lambda b, o, p: [c["RowBias"](b.msa_att_row, p)],
        "row_att": lambda b, o, p: [c["RowAtt"](b.msa_att_row, p)],
        "col_att": lambda b, o, p: [col(b, o, p)],
        "msa_trans": lambda b, o, p: [c["Whole"](b.core.msa_transition, p, with_mask=False)],
        "opm_proj": lambda b, o, p: [c["OpmProj"](*_island(b.core.outer_product_mean, o.core.outer_product_mean, p))],
        "opm_rows": lambda b, o, p: [c["OpmRows"](*_island(b.core.outer_product_mean, o.core.outer_product_mean, p))],
        # out-a, out-b, in-a, in-b
        "tm_proj": lambda b, o, p: [c["TmProj"](getattr(b.core, t), side, p)
                                    for t in ("tri_mul_out", "tri_mul_in") for side in ("a", "b")],
        "tm_tile": lambda b, o, p: [c["TmTile"](b.core.tri_mul_out, p), c["TmTile"](b.core.tri_mul_in, p)],
        "ta_bias": lambda b, o, p: [c["TaBias"](b.core.tri_att_start, p), c["TaBias"](b.core.tri_att_end, p)],
        "ta_rows": lambda b, o, p: [c["TaRows"](b.core.tri_att_start, p), c["TaRows"](b.core.tri_att_end, p)],
        "pair_trans": lambda b, o, p: [c["Whole"](b.core.pair_transition, p, with_mask=False)],
    }


KINDS = ("row_bias", "row_att", "col_att", "msa_trans", "opm_proj", "opm_rows", "tm_proj", "tm_tile", "ta_bias",
         "ta_rows", "pair_trans")
PER_BLOCK = {"tm_proj": 4, "tm_tile": 2, "ta_bias": 2, "ta_rows": 2}


def stack_ops(stack, precision: str = "fp32") -> dict:
    """{kind: Stacked module} for an OpenFold EvoformerStack or ExtraMSAStack (left untouched)."""
    from xopt.models.openfold.trunk import cast_with_islands

    low = cast_with_islands(stack, precision) if precision != "fp32" else stack
    stacked = _classes()["Stacked"]
    out = {}
    for kind, make in _builders().items():
        ops = [op for b, o in zip(low.blocks, stack.blocks) for op in make(b, o, precision)]
        out[kind] = stacked(ops).eval()
    return out
