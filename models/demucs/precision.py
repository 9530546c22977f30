"""HTDemucs' units for mixed precision: each encoder and decoder layer of the spectral and the
temporal branch, each cross-transformer layer, and the transformer's channel resamplers,
read from the module path the exporter records (the slimmed graph loses it: the gated passes
run on the raw export)."""
from __future__ import annotations

import re

from xopt.optimize.precision_groups import scope_path, weight_of

_LAYER = re.compile(r"(?:^|\.)(encoder|decoder|tencoder|tdecoder)\.(\d+)")
_TRANSFORMER = re.compile(r"crosstransformer\.(layers|layers_t)\.(\d+)")
_RESAMPLER = re.compile(r"(channel_(?:up|down)sampler(?:_t)?)")
_NAMES = {"encoder": "spectral encoder", "decoder": "spectral decoder", "tencoder": "temporal encoder",
          "tdecoder": "temporal decoder"}


def group(node) -> str | None:
    path = scope_path(node) or weight_of(node, set(node.input[1:]))
    m = _TRANSFORMER.search(path)
    if m:
        return f"transformer layer {m.group(2)} ({'temporal' if m.group(1) == 'layers_t' else 'spectral'})"
    m = _LAYER.search(path)
    if m:
        return f"{_NAMES[m.group(1)]} {m.group(2)}"
    m = _RESAMPLER.search(path)
    if m:
        return m.group(1).replace("_", " ")
    return None
