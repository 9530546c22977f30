"""The Evoformer stack as one module with plain tensor I/O (the main graph of an export).

`EvoformerTrunk(m, z, msa_mask, pair_mask) -> (m_out, z_out, s)`, FP32 at the boundary
whatever the compute precision, no batch dimension (m [S, N, c_m], z [N, N, c_z]); outputs
are zero at masked positions.

Precision is applied per sub-module, never by casting the whole model (a plain `.half()`
breaks in OpenFold's feature handling): the Evoformer copy is cast to BF16/FP16 and these
regions stay FP32 -- the ones OpenFold itself protects under FP16 autocast plus autocast's
own FP32 ops -- every LayerNorm, the outer-product mean, the triangle-multiplication
reduction over k, and the attention logits + softmax (also inside LMA). FP16 configs
additionally use OpenFold's `low_prec` (inf 1e4, eps 1e-4), set in `network.py`.

Chunking here is OpenFold's own (`chunk_layer`) for eager PyTorch runs only: its loops unroll
at trace time for one shape, so a traced chunked trunk is silently wrong at any other shape.
Exports trace this module unchunked; chunked ONNX runs are host-driven over the op graphs
(ops.py, host.py).
"""
from __future__ import annotations

import contextlib
import copy
from typing import Any, Mapping

_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def torch_dtype(precision: str):
    import torch

    return getattr(torch, _DTYPES[precision])


def _trunk_class():
    import torch

    class EvoformerTrunk(torch.nn.Module):
        def __init__(self, evoformer, precision="fp32", chunk_size=None, use_lma=False, lma_chunks=None,
                     inplace_safe=False, tri_mul_chunk=None, attn_chunk_size=None):
            super().__init__()
            self.attn_chunk_size = attn_chunk_size or chunk_size  # rows per attention chunk
            self.tri_mul_chunk = tri_mul_chunk  # in-place triangle multiplication rows per step
            self.evoformer = evoformer
            self.precision = precision
            self.chunk_size = chunk_size
            self.use_lma = use_lma
            self.lma_chunks = lma_chunks  # (q, kv) or None for OpenFold's defaults
            self.inplace_safe = inplace_safe  # True only where the caller owns m and z

        def settings(self) -> dict:
            return {"precision": self.precision, "chunk_size": self.chunk_size, "lma": self.use_lma,
                    "tri_mul_chunk": self.tri_mul_chunk, "attn_chunk_size": self.attn_chunk_size,
                    "lma_chunks": list(self.lma_chunks) if self.lma_chunks else None}

        def forward(self, m, z, msa_mask, pair_mask):
            out_msa_mask, out_pair_mask = msa_mask.float(), pair_mask.float()
            from xopt.models.openfold.cpu import quiet

            dt = torch_dtype(self.precision)
            with quiet(), precision_islands(self.precision), lma_chunk_sizes(self.lma_chunks), \
                    tri_mul_chunk(self.tri_mul_chunk if self.inplace_safe else None):
                m, z = m.to(dt), z.to(dt)
                msa_mask, pair_mask = msa_mask.to(dt), pair_mask.to(dt)
                # EvoformerStack.forward minus activation checkpointing (never wanted at
                # inference) and with OpenFold's separate attention chunk size exposed
                for block in self.evoformer.blocks:
                    m, z = block(m, z, msa_mask=msa_mask, pair_mask=pair_mask, chunk_size=self.chunk_size,
                                 use_lma=self.use_lma, use_flash=False, inplace_safe=self.inplace_safe,
                                 _mask_trans=False, _attn_chunk_size=self.attn_chunk_size)
                s = self.evoformer.linear(m[..., 0, :, :])
            # Masked (padding) positions carry arbitrary values that depend on how much padding
            # there is (a fully masked softmax row is uniform over its length); zero them so
            # every graph of this trunk agrees everywhere. Real positions are unaffected. (In
            # FP32: the legacy exporter's `diagonal` of an FP16 tensor mixes element types.)
            seq_mask = out_pair_mask.diagonal(dim1=-2, dim2=-1)
            return (m.float() * out_msa_mask[..., None], z.float() * out_pair_mask[..., None],
                    s.float() * seq_mask[..., None])

    return EvoformerTrunk


def make_trunk(evoformer, settings: Mapping[str, Any], inplace_safe: bool = False):
    """Wrap `evoformer` (an OpenFold EvoformerStack, left untouched) for `settings`:
    precision, chunk_size (transitions, outer product; attention too unless attn_chunk_size),
    attn_chunk_size, tri_mul_chunk (in-place runs only), lma, lma_chunks (eager runs only)."""
    precision = settings.get("precision", "fp32")
    if precision != "fp32":
        evoformer = cast_with_islands(evoformer, precision)
    trunk = _trunk_class()(evoformer, precision=precision, chunk_size=settings.get("chunk_size"),
                           use_lma=bool(settings.get("lma")), lma_chunks=settings.get("lma_chunks"),
                           inplace_safe=inplace_safe,
                           tri_mul_chunk=settings.get("tri_mul_chunk"), attn_chunk_size=settings.get("attn_chunk_size"))
    return trunk.eval()


def _island_class():
    import torch

    class Fp32Island(torch.nn.Module):
        """Runs `inner` in FP32 and hands its floating outputs back in `out_dtype`."""

        def __init__(self, inner, out_dtype):
            super().__init__()
            self.inner = inner.float()
            self.out_dtype = out_dtype

        def forward(self, *args, **kwargs):
            up = lambda t: t.float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t  # noqa: E731
            out = self.inner(*[up(a) for a in args], **{k: up(v) for k, v in kwargs.items()})
            if isinstance(out, tuple):
                return tuple(o.to(self.out_dtype) if isinstance(o, torch.Tensor) else o for o in out)
            return out.to(self.out_dtype)

    return Fp32Island


def cast_with_islands(evoformer, precision: str):
    """A copy of `evoformer` in `precision` with the FP32 islands described at the top."""
    import types

    from openfold.model.outer_product_mean import OuterProductMean
    from openfold.model.primitives import LayerNorm
    from openfold.model.triangular_multiplicative_update import TriangleMultiplicativeUpdate

    dt = torch_dtype(precision)
    island = _island_class()
    evo = copy.deepcopy(evoformer).to(dt)
    # islands get deep copies of the *original* FP32 sub-modules (a cast round trip loses bits)
    source = dict(evoformer.named_modules())
    for pname, parent in list(evo.named_modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, (LayerNorm, OuterProductMean)):
                full = f"{pname}.{name}" if pname else name
                setattr(parent, name, island(copy.deepcopy(source[full]), dt))
        # FP16 tops out at 65504: a 1e9 mask bias becomes -inf and a fully masked (padding) row
        # turns NaN. OpenFold's low_prec uses 1e4; apply it to this copy whatever the model was
        # built with (exp(-1e4) is as zero as exp(-1e9)).
        if precision == "fp16" and isinstance(getattr(parent, "inf", None), float) and parent.inf > 1e4:
            parent.inf = 1e4
        if isinstance(parent, TriangleMultiplicativeUpdate):
            # the sum over k of a*b grows with N: reduce in FP32, the (island) layer norm follows
            orig = parent._combine_projections
            parent._combine_projections = types.MethodType(
                lambda self, a, b, _inplace_chunk_size=None, _orig=orig: _orig(a.float(), b.float(),
                                                                               _inplace_chunk_size), parent)
    return evo


def _attention_fp32(query, key, value, biases):
    """OpenFold's stock attention with logits, biases and softmax in FP32."""
    import torch

    logits = torch.matmul(query.float(), key.float().transpose(-1, -2))
    for b in biases:
        logits = logits + b.float()
    return torch.matmul(torch.softmax(logits, dim=-1).to(value.dtype), value)


@contextlib.contextmanager
def precision_islands(precision: str):
    """Route OpenFold's attention cores through FP32 logits while a low-precision trunk runs."""
    if precision == "fp32":
        yield
        return
    from openfold.model import primitives

    orig_attn, orig_lma = primitives._attention, primitives._lma

    def lma_fp32(q, k, v, biases, q_chunk_size, kv_chunk_size):
        return orig_lma(q.float(), k.float(), v.float(), [b.float() for b in biases],
                        q_chunk_size, kv_chunk_size).to(v.dtype)

    primitives._attention, primitives._lma = _attention_fp32, lma_fp32
    try:
        yield
    finally:
        primitives._attention, primitives._lma = orig_attn, orig_lma


@contextlib.contextmanager
def swap_defaults(fn, values: Mapping[str, Any]):
    """Temporarily change keyword defaults of `fn` (OpenFold's callers never pass some knobs)."""
    if not values:
        yield
        return
    import inspect

    names = [p.name for p in inspect.signature(fn).parameters.values() if p.default is not inspect.Parameter.empty]
    old = fn.__defaults__
    new = list(old)
    for key, value in values.items():
        new[names.index(key)] = value
    fn.__defaults__ = tuple(new)
    try:
        yield
    finally:
        fn.__defaults__ = old


@contextlib.contextmanager
def lma_chunk_sizes(chunks):
    """LMA's query/key chunk sizes (OpenFold's defaults 1024/4096 mean no chunking below ~1024
    residues, and no caller passes others)."""
    if not chunks:
        yield
        return
    from openfold.model.primitives import Attention

    with swap_defaults(Attention.forward, {"lma_q_chunk_size": int(chunks[0]), "lma_kv_chunk_size": int(chunks[1])}):
        yield


@contextlib.contextmanager
def tri_mul_chunk(rows):
    """Rows per step of the triangle multiplication's in-place inference path (OpenFold's
    default 256 means one step, i.e. no saving, up to 256 residues)."""
    if not rows:
        yield
        return
    from openfold.model.triangular_multiplicative_update import TriangleMultiplicativeUpdate

    with swap_defaults(TriangleMultiplicativeUpdate.forward, {"_inplace_chunk_size": int(rows)}):
        yield


def first_nonfinite(module, args) -> str | None:
    """Run `module(*args)` with forward hooks; name the first sub-module (in execution order)
    whose output holds NaN/Inf, or None when everything is finite."""
    import torch

    found: list[str] = []

    def hook(name):
        def check(_mod, _inp, out):
            if found:
                return
            outs = out if isinstance(out, (tuple, list)) else (out,)
            for o in outs:
                if isinstance(o, torch.Tensor) and o.is_floating_point() and not torch.isfinite(o).all():
                    found.append(name or type(_mod).__name__)
                    return
        return check

    handles = [mod.register_forward_hook(hook(name)) for name, mod in module.named_modules()]
    try:
        with torch.no_grad():
            module(*args)
    finally:
        for h in handles:
            h.remove()
    return found[0] if found else None


def check_finite(module, args, where: str) -> None:
    """Raise NonFiniteError naming the first offending sub-module."""
    from xopt.errors import NonFiniteError

    first = first_nonfinite(module, args)
    if first is not None:
        raise NonFiniteError(where, first)
