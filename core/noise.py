"""The noise floor: the FP32 model's own drift when its inputs move by one quantum (±1 grey
level, one LSB of audio, ...), i.e. what "no real change" looks like in the model's terms.

One definition, used by the export-time gate, `xopt profile` and `xopt bench`, so the three
print the same number for the same model, weights and inputs: the spec's profiling inputs at
the device profile's targets (`NOISE_INPUTS` of them, the given seed), each perturbed with the
spec's `perturb` under `seed + 1`, run through the FP32 graph. Numpy only: the caller passes
the function that runs the graph.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from xopt.compare import compare, worst
from xopt.stats import mean_terms

NOISE_INPUTS = 4  # enough for a stable mean on every model; a Demucs segment costs seconds each

Run = Callable[[dict], dict]  # feed -> outputs


def drift_between(spec, refs: Sequence[dict], outs: Sequence[dict], feeds: Sequence[dict]) -> dict:
    """The spec's domain terms averaged over the feeds, and the worst tensor statistics."""
    terms = mean_terms([spec.drift(r, o, f) for r, o, f in zip(refs, outs, feeds)])
    terms["tensor"] = worst([compare(r, o) for r, o in zip(refs, outs)])
    return terms


def floor_feeds(spec, targets: dict, seed: int) -> list[dict]:
    """The inputs every noise floor of this model at these targets is measured on."""
    return list(spec.profile_inputs(targets, NOISE_INPUTS, seed))


def noise_floor(spec, run: Run, feeds: Sequence[dict], seed: int, refs: Sequence[dict] | None = None) -> dict:
    """Drift terms of the FP32 graph (`run`) between `feeds` and their ±1-quantum perturbations.
    `refs`: the outputs on `feeds` when the caller already has them."""
    refs = list(refs) if refs is not None else [run(f) for f in feeds]
    rng = np.random.default_rng(seed + 1)
    noisy = [spec.perturb(f, rng) for f in feeds]
    return drift_between(spec, refs, [run(f) for f in noisy], noisy)
