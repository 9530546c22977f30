"""Export-time patchers for the Demucs core: context managers the exporter enters around
tracing (ModelSpec.patchers). They change how the graph is traced, never what the torch
module computes, so the parity reference is demucs' own forward.
"""
from __future__ import annotations

import contextlib

from xopt.models.demucs.core import core_shapes

LONG_REDUCTION = 1 << 17  # a single axis longer than this is reduced in two stages


def _split_mean(x, dim: int):
    """Mean over one dim, in two stages of ~sqrt(n) elements when the dim is very long.

    ONNX Runtime's CPU reductions accumulate in plain float32; one reduction over the ~1e6-1e7
    elements of demucs' input statistics or of a GroupNorm(1, C) costs ~1e-4 relative error
    (the FP32 graph drifted to 60 dB SDR from PyTorch). Reducing axis by axis, and the longest
    axes in two stages, keeps it at ~1e-6; scaling each stage keeps every intermediate at the
    data's scale (no FP16 overflow either).
    """
    import math

    import torch.nn.functional as F

    n = x.shape[dim]
    if n <= LONG_REDUCTION:
        return x.mean(dim=dim, keepdim=True)
    k = int(math.ceil(math.sqrt(n)))
    rows = -(-n // k)
    x = x.movedim(dim, -1)
    if rows * k != n:
        x = F.pad(x, (0, rows * k - n))
    partial = x.reshape(*x.shape[:-1], rows, k).mean(dim=-1)  # padding zeros: rescaled below
    x = (partial * (k / n)).sum(dim=-1, keepdim=True)
    return x.movedim(-1, dim)


def _precise_mean(x, dims):
    count = 1
    for d in dims:
        count *= x.shape[d]
    for d in sorted((d % x.dim() for d in dims), reverse=True):
        x = _split_mean(x, d)
    return x, count


def _reduction_dims(args, kwargs):
    dims = kwargs.get("dim", args[1] if len(args) > 1 else None)
    if dims is None:
        return None
    return (dims,) if isinstance(dims, int) else tuple(dims)


def _precise_mode_class():
    import torch
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode

    means, stds = {torch.Tensor.mean, torch.mean}, {torch.Tensor.std, torch.std}

    class PreciseReductions(TorchFunctionMode):
        """Rewrites long mean/std/group_norm reductions into two-stage sums while tracing."""

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = dict(kwargs or {})
            if func in means or func in stds:
                x, dims = args[0], _reduction_dims(args, kwargs)
                if dims is not None and x.is_floating_point():
                    keep = kwargs.get("keepdim", args[2] if len(args) > 2 and func in means else False)
                    mean, count = _precise_mean(x, dims)
                    if func in stds:
                        correction = kwargs.get("correction", 0 if kwargs.get("unbiased") is False else 1)
                        d = x - mean
                        var, _ = _precise_mean(d * d, dims)
                        mean = (var * (count / max(count - correction, 1))).sqrt()
                    return mean if keep else mean.squeeze(dims)
            if func is F.group_norm:
                x, groups = args[0], args[1]
                weight = kwargs.get("weight", args[2] if len(args) > 2 else None)
                bias = kwargs.get("bias", args[3] if len(args) > 3 else None)
                eps = kwargs.get("eps", args[4] if len(args) > 4 else 1e-5)
                shape = x.shape
                g = x.reshape(shape[0], groups, shape[1] // groups, -1)  # stats over (channels, positions)
                mean, _ = _precise_mean(g, (2, 3))
                d = g - mean
                var, _ = _precise_mean(d * d, (2, 3))
                y = (d / (var + eps).sqrt()).reshape(shape)
                extra = (1,) * (len(shape) - 2)
                if weight is not None:
                    y = y * weight.reshape(-1, *extra)
                if bias is not None:
                    y = y + bias.reshape(-1, *extra)
                return y
            return func(*args, **kwargs)

    return PreciseReductions


def _gelu_mode_class():
    import math

    import torch
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode

    class FusableGelu(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = dict(kwargs or {})
            if func is F.gelu and kwargs.get("approximate", "none") == "none":
                x = args[0]
                return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))
            return func(*args, **kwargs)

    return FusableGelu


@contextlib.contextmanager
def fusable_gelu(_module):
    """Export patcher: exact GELU written as x·0.5·(1 + erf(x/√2)), the operand order ONNX
    Runtime's GeluFusion recognises (the exporter's own decomposition stays five elementwise
    passes over tensors of up to 1e7 elements, 56 times in htdemucs)."""
    with _gelu_mode_class()():
        yield


@contextlib.contextmanager
def precise_reductions(_module):
    """Export patcher: trace long reductions as two-stage sums (see `_split_sum`)."""
    with _precise_mode_class()():
        yield


_EMBEDDINGS = ("create_sin_embedding", "create_2d_sin_embedding")


@contextlib.contextmanager
def constant_positional_embeddings(module):
    """Export patcher: the transformer's sinusoidal embeddings as constants.

    demucs builds them in forward from positions (up to ~1.3e3) and frequencies. Traced,
    that is a Range/Pow/Div/Sin subgraph whose phases an FP16 conversion rounds to 0.25-1 rad
    (the FP16 variant fell to 30 dB SDR). They depend on the segment only, so one eager pass
    records them and the traced forward reuses the recorded tensors (initializers in ONNX).
    """
    import torch
    import demucs.transformer as tr

    model = getattr(module, "model", None)
    if getattr(model, "crosstransformer", None) is None:
        yield
        return
    originals = {name: getattr(tr, name) for name in _EMBEDDINGS}
    recorded: dict = {}

    def key(name, args, kwargs):
        return name, repr(args), repr(sorted(kwargs.items()))

    def recorder(name):
        def call(*args, **kwargs):
            out = originals[name](*args, **kwargs)
            recorded[key(name, args, kwargs)] = out.detach().clone()
            return out
        return call

    def replay(name):
        def call(*args, **kwargs):
            hit = recorded.get(key(name, args, kwargs))
            return hit if hit is not None else originals[name](*args, **kwargs)
        return call

    shapes = core_shapes(model, 1)
    try:
        for name in _EMBEDDINGS:
            setattr(tr, name, recorder(name))
        with torch.no_grad():
            module(torch.zeros(shapes["mix"]), torch.zeros(shapes["spec"]))
        for name in _EMBEDDINGS:
            setattr(tr, name, replay(name))
        yield
    finally:
        for name, fn in originals.items():
            setattr(tr, name, fn)


@contextlib.contextmanager
def no_mha_fastpath(_module):
    """Export patcher: keep nn.MultiheadAttention on its decomposed path (the fused
    `_native_multi_head_attention` fast path has no ONNX lowering in the legacy exporter)."""
    import torch

    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)
