"""Run OpenFold on a CPU-only machine without editing the installed package.

In no-grad inference OpenFold calls `attn_core_inplace_cuda.forward_` (an in-place softmax
kernel) from the structure module's IPA and from `attention_core`, the memory-efficient
attention the extra-MSA stack uses. Built without CUDA, that extension is a stub that raises
"not implemented on CPU". When CUDA is unavailable we give those two OpenFold modules a
pure-torch replacement with the same calling convention; with CUDA we change nothing, so the
GPU path runs OpenFold's own kernel. (The extra-MSA stack additionally runs with LMA on CPU:
see `network.extra_msa_kwargs`.)
"""
from __future__ import annotations

import contextlib
import importlib
import sys
import types
import warnings

_USERS = ("openfold.model.structure_module", "openfold.utils.kernel.attention_core")
_ROW_BLOCK = 1 << 14  # rows per block when a low-precision softmax is done in FP32


def softmax_inplace_(a, rows: int | None = None, cols: int | None = None):
    """Softmax over the last dim of `a`, written into `a` (the kernel's contract).

    FP32 runs fully in place (max-subtract, exp, divide). Lower precisions are computed in
    FP32 a block of rows at a time and written back, as the CUDA kernel accumulates in FP32.
    """
    import torch

    if cols is not None and a.shape[-1] != cols:
        raise ValueError(f"softmax_inplace_: last dim {a.shape[-1]} != cols {cols}")
    if rows is not None and a.numel() != rows * a.shape[-1]:
        raise ValueError(f"softmax_inplace_: {a.numel()} elements != rows*cols {rows}*{a.shape[-1]}")
    if not a.is_contiguous():
        raise ValueError("softmax_inplace_ needs a contiguous tensor (the CUDA kernel does too)")
    with torch.no_grad():
        if a.dtype == torch.float32 or a.dtype == torch.float64:
            a.sub_(a.amax(dim=-1, keepdim=True)).exp_()
            a.div_(a.sum(dim=-1, keepdim=True))
            return a
        flat = a.view(-1, a.shape[-1])
        for i in range(0, flat.shape[0], _ROW_BLOCK):
            blk = flat[i:i + _ROW_BLOCK]
            blk.copy_(torch.softmax(blk.float(), dim=-1))
    return a


def softmax_backward_(out, d_out, values, rows=None, cols_out=None, cols_values=None):
    """Gradient of the in-place softmax, written into `out` (the kernel's contract):
    d_logits = s * (g - sum(g * s)) with g = d_out @ values^T and s the softmax output."""
    import torch

    with torch.no_grad():
        g = torch.matmul(d_out.to(torch.float32), values.to(torch.float32).transpose(-1, -2))
        s = out.to(torch.float32)
        grad = s * (g - (g * s).sum(dim=-1, keepdim=True))
        out.copy_(grad.to(out.dtype))
    return out


def _make_shim(real=None) -> types.ModuleType:
    """A module with the extension's two functions; CUDA tensors still go to the real kernel."""
    shim = types.ModuleType("attn_core_inplace_cuda")
    shim.__doc__ = "xopt CPU fallback for OpenFold's attn_core_inplace_cuda (pure torch)"

    def forward_(a, rows, cols):
        if real is not None and a.is_cuda:
            return real.forward_(a, rows, cols)
        return softmax_inplace_(a, rows, cols)

    def backward_(out, d_out, values, rows, cols_out, cols_values):
        if real is not None and out.is_cuda:
            return real.backward_(out, d_out, values, rows, cols_out, cols_values)
        return softmax_backward_(out, d_out, values, rows, cols_out, cols_values)

    shim.forward_ = forward_
    shim.backward_ = backward_
    shim.xopt_shim = True
    return shim


def import_openfold():
    """Import torch, then OpenFold, routing around the CPU stub when CUDA is unavailable.

    Returns the `openfold` package. Raises MissingExtraError when it is not installed.
    """
    import torch  # the extension links against libtorch: torch must be loaded first

    from xopt.extras import require

    cpu_only = not torch.cuda.is_available()
    real = None
    try:
        real = importlib.import_module("attn_core_inplace_cuda")
    except ImportError:
        if cpu_only:
            # OpenFold imports the extension at module import; without any build of it
            # (e.g. a source checkout without `setup.py install`) we register the fallback.
            sys.modules["attn_core_inplace_cuda"] = _make_shim(None)
    openfold = require("openfold", "openfold", "run models/openfold/install.py")
    if cpu_only:
        install_cpu_fallback(real)
    return openfold


def install_cpu_fallback(real=None) -> bool:
    """Point OpenFold's two users of the kernel at the pure-torch fallback. No-op with CUDA."""
    import torch

    if torch.cuda.is_available():
        return False
    shim = None
    for name in _USERS:
        mod = importlib.import_module(name)
        current = getattr(mod, "attn_core_inplace_cuda", None)
        if getattr(current, "xopt_shim", False):
            continue
        shim = shim or _make_shim(real)
        mod.attn_core_inplace_cuda = shim
    return True


@contextlib.contextmanager
def quiet():
    """OpenFold 0.0.1 trips deprecation warnings in current torch on every call (list
    indexing, torch.cuda.amp.autocast, get_autocast_gpu_dtype): not the user's concern."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*non-tuple sequence for multidimensional indexing.*")
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*(autocast|get_autocast).*")
        warnings.filterwarnings("ignore", message=".*get_autocast_gpu_dtype.*")
        yield


def fallback_active() -> bool:
    mod = sys.modules.get("openfold.model.structure_module")
    return bool(mod is not None and getattr(getattr(mod, "attn_core_inplace_cuda", None), "xopt_shim", False))
