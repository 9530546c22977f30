"""Parity bounds: a combined atol/rtol bound against the output's scale survives the float
reordering a runtime upgrade brings, where a bare max_rel near zero does not."""
from __future__ import annotations

import numpy as np
import pytest

from xopt.errors import ParityError
from xopt.compare import check, compare, passed


def _reordered(seed=0):
    rng = np.random.default_rng(seed)
    ref = rng.normal(0, 1e5, 4096).astype(np.float32)
    ref[:8] = np.float32(1e-3)  # values near zero, as where an output crosses it
    out = ref.copy()
    out[:8] += np.float32(0.0156)  # the ORT 1.32 change: tiny against a 1e5 scale
    return {"y": ref}, {"y": out}


def test_reordering_noise_fails_bare_max_rel_but_passes_the_scale_bound():
    ref, out = _reordered()
    diffs = compare(ref, out)
    assert diffs["y"]["max_rel"] > 1e-5  # what went red on onnxruntime 1.32
    assert not passed(diffs, {"max_rel": 1e-5})
    assert passed(diffs, {"atol": 1e-6, "rtol": 1e-6})
    assert diffs["y"]["ref_peak"] == pytest.approx(float(np.abs(ref["y"]).max()))


def test_scale_bound_still_catches_a_real_error():
    ref, out = _reordered()
    out["y"][100] += 0.5 * diffs_peak(ref)
    diffs = compare(ref, out)
    assert not passed(diffs, {"atol": 1e-6, "rtol": 1e-6})
    with pytest.raises(ParityError, match=r"max_abs<=1e-06\+1e-06\*max\|ref\|"):
        check("toy fp32", diffs, {"atol": 1e-6, "rtol": 1e-6})


def test_atol_alone_is_an_absolute_bound():
    ref, out = {"y": np.zeros(4, np.float32)}, {"y": np.full(4, 2e-6, np.float32)}
    assert passed(compare(ref, out), {"atol": 3e-6}) and not passed(compare(ref, out), {"atol": 1e-6})


def diffs_peak(ref):
    return float(np.abs(ref["y"]).max())
