"""Signal-to-distortion ratios: a plain SDR for the frequent path, museval's BSS Eval on request.

`import museval` runs its package `__init__`, which imports musdb -> stempeg, and stempeg
refuses to import without ffmpeg/ffprobe on PATH. The metrics live in one self-contained
module (`museval/metrics.py`, numpy + scipy only), so it is loaded from the installed
package's file without executing the package: no ffmpeg, no stubs, same code.
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

from xopt.errors import MissingExtraError

EPS = 1e-7  # demucs' evaluate.new_sdr delta: silence vs silence is ~0 dB, not NaN


def sdr(reference: np.ndarray, estimate: np.ndarray, eps: float = EPS) -> float:
    """10·log10(|ref|² / |ref − est|²) over all channels and samples (MDX/demucs 'new SDR')."""
    ref = np.asarray(reference, dtype=np.float64)
    err = ref - np.asarray(estimate, dtype=np.float64)
    return float(10.0 * np.log10((np.sum(ref ** 2) + eps) / (np.sum(err ** 2) + eps)))


def per_source(references: np.ndarray, estimates: np.ndarray, eps: float = EPS) -> np.ndarray:
    """SDR per source for arrays [..., S, C, L] (leading axes pooled)."""
    ref = np.asarray(references, dtype=np.float64)
    est = np.asarray(estimates, dtype=np.float64)
    axes = tuple(i for i in range(ref.ndim) if i != ref.ndim - 3)
    num = np.sum(ref ** 2, axis=axes)
    den = np.sum((ref - est) ** 2, axis=axes)
    return 10.0 * np.log10((num + eps) / (den + eps))


@functools.lru_cache(maxsize=1)
def museval_metrics():
    """museval.metrics, loaded from its file without running museval/__init__ (musdb/stempeg/ffmpeg)."""
    spec = importlib.util.find_spec("museval")  # locates the package; does not execute it
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError("museval", "museval", "needed for BSS Eval SDR")
    path = Path(list(spec.submodule_search_locations)[0]) / "metrics.py"
    loaded = importlib.util.spec_from_file_location("xopt_museval_metrics", path)
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    return module


def bss_sdr(references: np.ndarray, estimates: np.ndarray, samplerate: int = 44100,
            window_s: float = 1.0, hop_s: float = 1.0) -> np.ndarray:
    """museval's SDR per source (median over 1 s windows, the SiSEC convention) for [S, C, L] arrays.

    Slow (seconds per source per 30 s of audio): use it for reports, `sdr` for gates.
    """
    metrics = museval_metrics()
    ref = np.moveaxis(np.asarray(references, dtype=np.float64), -1, -2)  # [S, L, C]
    est = np.moveaxis(np.asarray(estimates, dtype=np.float64), -1, -2)
    scores = metrics.bss_eval(ref, est, window=int(window_s * samplerate), hop=int(hop_s * samplerate),
                              compute_permutation=False, filters_len=512, framewise_filters=False,
                              bsseval_sources_version=False)
    sdr_frames = scores[0]  # [S, frames]; NaN for silent frames
    return np.array([np.nanmedian(s) if np.isfinite(s).any() else np.nan for s in sdr_frames])
