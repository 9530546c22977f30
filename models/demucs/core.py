"""The torch side of Demucs: build a demucs-package model and wrap its real-valued core.

The whole `HTDemucs.forward` does not export (complex STFT/iSTFT, a data-dependent
assert in `pad1d`, an iSTFT that unrolls into ~176k nodes). `DemucsCore` runs demucs'
own forward with its four spectral helpers swapped for the duration of the call:
`_spec`/`_magnitude` hand back the CaC spectrogram the host computed, `_mask` captures
the denormalised spectral output, `_ispec` contributes nothing. Everything between —
normalisation, encoders, transformer, decoders — is the package's code, untouched.
"""
from __future__ import annotations

import contextlib
from fractions import Fraction
from typing import Any, Mapping

from xopt.errors import UserError

ARCHES = ("htdemucs", "hdemucs", "demucs")


def model_classes() -> dict[str, type]:
    from xopt.extras import require

    require("demucs", "demucs", "the Demucs architectures, needed to export")  # one line if absent
    from demucs.demucs import Demucs
    from demucs.hdemucs import HDemucs
    from demucs.htdemucs import HTDemucs

    return {"htdemucs": HTDemucs, "hdemucs": HDemucs, "demucs": Demucs}


def arch_of(model) -> str:
    for name, klass in model_classes().items():
        if type(model) is klass:
            return name
    raise UserError(f"{type(model).__name__} is not a Demucs model xopt knows",
                    f"use a checkpoint of one of: {', '.join(model_classes())}")


def as_fraction(seconds) -> Fraction:
    """Segment lengths as demucs stores them (a Fraction keeps 7.8 s exact)."""
    return Fraction(seconds).limit_denominator(1000) if not isinstance(seconds, Fraction) else seconds


def segment_samples(model) -> int:
    return int(as_fraction(model.segment) * model.samplerate)


def check_supported(model) -> None:
    """The host DSP implements complex-as-channels hybrid models only."""
    arch = arch_of(model)
    if arch == "demucs":
        return
    if not model.cac:
        raise UserError(f"this {arch} checkpoint uses magnitude masking + Wiener filtering (cac=False)",
                        "only complex-as-channels models (all released hybrid models) are supported")
    if arch == "hdemucs" and (not model.hybrid or model.hybrid_old):
        raise UserError("this hdemucs checkpoint is spectrogram-only or uses the MDX 'hybrid_old' padding",
                        "use a hybrid hdemucs checkpoint (hybrid=True, hybrid_old=False)")


def instantiate(arch: str, kwargs: Mapping[str, Any], seed: int):
    import torch

    classes = model_classes()
    if arch not in classes:
        raise UserError(f"unknown Demucs architecture {arch!r}", f"choose one of {', '.join(classes)}")
    kwargs = dict(kwargs)
    if "segment" in kwargs:
        kwargs["segment"] = as_fraction(kwargs["segment"])
    torch.manual_seed(seed)
    model = classes[arch](**kwargs)
    return model.eval()


def make_representative(model, seed: int, low: float = 0.1, high: float = 0.5) -> dict:
    """Redraw every LayerScale (default 1e-3/1e-4) in [low, high].

    At the default init the transformer and the DConv residual branches add ~1e-4 of their
    output, so the model is effectively a plain U-Net and any quantization of those branches
    looks free. Trained models learn scales of order 0.1-1; drawing them there makes every
    branch contribute. Returns how many scales were redrawn per kind.
    """
    import torch
    from demucs.transformer import LayerScale

    gen = torch.Generator().manual_seed(seed + 7919)
    counts = {"transformer": 0, "dconv": 0}
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, LayerScale):
                mod.scale.copy_(torch.empty_like(mod.scale).uniform_(low, high, generator=gen))
                counts["transformer" if name.startswith("crosstransformer") else "dconv"] += 1
    return counts


@contextlib.contextmanager
def _overridden(obj, attrs: Mapping[str, Any]):
    """Shadow methods on one instance (not its class) for the duration of a call."""
    saved = {k: obj.__dict__[k] for k in attrs if k in obj.__dict__}
    obj.__dict__.update(attrs)
    try:
        yield
    finally:
        for k in attrs:
            obj.__dict__.pop(k, None)
        obj.__dict__.update(saved)


def _core_module_class():
    import torch

    class DemucsCore(torch.nn.Module):
        """(mix[B,C,L], spec[B,2C,F,T]) -> (spec_out[B,S,2C,F,T], wave_out[B,S,C,L]).

        `spec` is the CaC STFT of `mix` exactly as demucs builds it (host side:
        xopt.models.demucs.dsp.core_spec); sources = wave_out + iSTFT(spec_out).
        For the time-domain Demucs v2 there is no spectral branch: `spec` is a [B,4,1,1]
        placeholder and `spec_out` zeros, so every architecture shares one interface.
        """

        def __init__(self, model):
            super().__init__()
            check_supported(model)
            self.model = model
            self.arch = arch_of(model)
            self.sources = list(model.sources)

        def forward(self, mix, spec):
            if self.arch == "demucs":
                wave = self.model(mix)
                return spec.unsqueeze(1).expand(-1, len(self.sources), -1, -1, -1) * 0.0, wave
            captured = []

            def keep(_z, m):
                captured.append(m)
                return m

            swaps = {"_spec": lambda _x: spec, "_magnitude": lambda z: z, "_mask": keep,
                     "_ispec": lambda _z, length=None, scale=0: 0.0}
            with _overridden(self.model, swaps):
                wave = self.model(mix)
            return captured[0], wave

    return DemucsCore


def wrap(model):
    return _core_module_class()(model.eval()).eval()


def core_shapes(model, batch: int = 1) -> dict[str, tuple[int, ...]]:
    """Input shapes of the core for one segment of this model."""
    from xopt.models.demucs.dsp import spec_shape

    length = segment_samples(model)
    chans = model.audio_channels
    if arch_of(model) == "demucs":
        spec = (2 * chans, 1, 1)
    else:
        spec = spec_shape(length, chans, model.nfft)
    return {"mix": (batch, chans, length), "spec": (batch,) + tuple(spec)}
