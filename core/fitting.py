"""The pieces every fit-to-budget search shares: peak memory measured in a fresh process (an
allocator's caches would hide growth otherwise), a non-negative least-squares fit of those
peaks on a model's basis, the largest size a fitted curve keeps within budget, and the one
parser for `xopt export --chunk`. A model supplies the measurement and the basis.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from itertools import combinations
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from xopt.errors import UserError


# CUDA context + cuDNN/cuBLAS workspaces of an ORT CUDA session, typical: what a GPU profile's
# estimate adds to the host-measured peak
CUDA_CONTEXT_MB = 400.0


class MeasurementError(UserError):
    """A measurement process failed: the model's extra is missing, or memory ran out."""


def measure_in_fresh_process(ref: str, payload: Mapping[str, Any], *, timeout: float = 1800.0,
                             what: str = "measurement", fix: str = "check that the model's extra is installed "
                             "and memory is free") -> dict:
    """Call the "module:attr" `ref` with `payload` in a new interpreter; its JSON result."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    # glibc's adaptive mmap threshold lets freed big blocks be recycled from the heap without
    # showing in the peak; a fixed threshold keeps large tensors on mmap
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")
    proc = subprocess.run([sys.executable, "-m", "xopt.fitting", ref, json.dumps(dict(payload))],
                          capture_output=True, text=True, timeout=timeout, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise MeasurementError(f"{what} failed: {tail[0][:300]}", fix)
    return json.loads(lines[-1])


def nnls(columns: Sequence[np.ndarray], y: Sequence[float]) -> tuple[np.ndarray, float]:
    """Non-negative least squares of y on `columns` -> (coefficients, residual sum of squares).

    Exact for the few columns a memory model has: among the least-squares fits on every subset
    of columns, the best one with no negative coefficient is the NNLS optimum. Columns are
    scaled to unit peak for conditioning."""
    y = np.asarray(y, dtype=np.float64)
    a = np.stack([np.asarray(c, dtype=np.float64) for c in columns], axis=1)
    scale = np.maximum(np.abs(a).max(axis=0), 1e-300)
    a = a / scale
    best_rss, best = float(np.sum(y ** 2)), np.zeros(a.shape[1])
    for k in range(1, a.shape[1] + 1):
        for subset in combinations(range(a.shape[1]), k):
            cols = list(subset)
            coef, *_ = np.linalg.lstsq(a[:, cols], y, rcond=None)
            if (coef < 0).any():
                continue
            rss = float(np.sum((y - a[:, cols] @ coef) ** 2))
            if rss < best_rss - 1e-12 * max(1.0, best_rss):
                best_rss, best = rss, np.zeros(a.shape[1])
                best[cols] = coef
    return best / scale, best_rss


def largest_within(predict: Callable[[int], float], budget: float, limit: int) -> int:
    """Largest integer n in [1, limit] with predict(n) <= budget (predict grows with n); 0 if none."""
    if predict(1) > budget:
        return 0
    lo, hi = 1, 2
    while hi <= limit and predict(hi) <= budget:
        lo, hi = hi, hi * 2
    if hi > limit:
        return limit
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if predict(mid) <= budget else (lo, mid)
    return lo


def parse_chunk(value: Any, words: Sequence[str] = ("auto",), number: type = float, example: str = "auto"):
    """`--chunk VALUE`: one of `words` (lower-cased), or a positive `number`."""
    text = str(value).strip().lower()
    if text in words:
        return text
    choices = ", ".join(words) + (" or a positive integer" if number is int else " or a positive number")
    try:
        parsed = number(text)
    except ValueError as exc:
        raise UserError(f"--chunk {value} is not a chunk setting", f"pass {choices}, e.g. {example}") from exc
    if not parsed > 0:
        raise UserError(f"--chunk {value} is not positive", f"pass {choices}, e.g. {example}")
    return parsed


if __name__ == "__main__":  # one measurement in a fresh process: python -m xopt.fitting MODULE:ATTR JSON
    from xopt.spec import resolve

    print(json.dumps(resolve(sys.argv[1])(json.loads(sys.argv[2]))), flush=True)
