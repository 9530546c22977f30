"""Export patchers for OpenFold's trunk (spec.patchers: module -> context manager).

- `permute_symbolic`: OpenFold's `permute_final_dims` builds negative permutation indices;
  torch's legacy `aten::permute` symbolic copies them straight into `Transpose.perm`, which
  ONNX rejects ("Invalid attribute perm") or ORT crashes on. Ours normalises them by rank.
- `msa_bias_without_row_loop`: `MSAAttention._prep_inputs` projects the pair bias 256 rows
  at a time with a Python loop, which the tracer unrolls for the traced N (wrong beyond it).
  The replacement projects all rows at once: the same arithmetic, without the loop.
- `no_activation_checkpointing`: modules carrying a `ckpt` flag get it cleared so that
  `torch.utils.checkpoint` never enters a trace.
"""
from __future__ import annotations

import contextlib

_OPSETS = tuple(range(9, 22))


def _permute(g, self, dims):
    from torch.onnx import symbolic_helper

    dims = symbolic_helper._parse_arg(dims, "is")
    rank = symbolic_helper._get_tensor_rank(self)
    if rank is None:
        rank = len(dims)
    perm = [d + rank if d < 0 else d for d in dims]
    if perm == list(range(rank)):
        return self
    return g.op("Transpose", self, perm_i=perm)


@contextlib.contextmanager
def permute_symbolic(module=None):
    import torch

    for opset in _OPSETS:
        torch.onnx.register_custom_op_symbolic("aten::permute", _permute, opset)
    try:
        yield
    finally:
        for opset in _OPSETS:
            torch.onnx.unregister_custom_op_symbolic("aten::permute", opset)


def _prep_inputs_single_pass(self, m, z, mask, inplace_safe=False):
    from openfold.utils.tensor_utils import permute_final_dims

    n_seq, n_res = m.shape[-3:-1]
    if mask is None:
        mask = m.new_ones(m.shape[:-3] + (n_seq, n_res))
    # [*, S, 1, 1, N]
    mask_bias = (self.inf * (mask - 1))[..., :, None, None, :]
    if self.pair_bias and z is not None and self.layer_norm_z is not None and self.linear_z is not None:
        z = self.linear_z(self.layer_norm_z(z))
        # [*, 1, H, N, N]
        z = permute_final_dims(z, (2, 0, 1)).unsqueeze(-4)
    return m, mask_bias, z


@contextlib.contextmanager
def msa_bias_without_row_loop(module=None):
    from openfold.model.msa import MSAAttention

    orig = MSAAttention._prep_inputs
    MSAAttention._prep_inputs = _prep_inputs_single_pass
    try:
        yield
    finally:
        MSAAttention._prep_inputs = orig


@contextlib.contextmanager
def no_activation_checkpointing(module):
    flagged = [m for m in module.modules() if getattr(m, "ckpt", False) is True]
    for m in flagged:
        m.ckpt = False
    try:
        yield
    finally:
        for m in flagged:
            m.ckpt = True


PATCHERS = (permute_symbolic, msa_bias_without_row_loop, no_activation_checkpointing)
