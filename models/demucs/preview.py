"""Demucs previews (the spec's `previews` hook): for the first profiled segment, the mix and,
per stem, the FP32 and variant spectrograms, the spectrogram of their difference on the same
dB scale (where the variant's error sits, and how far below the stem), and short players.

One segment only: four stems x three spectrograms x two players per variant already make a
long page, and every segment of the profile goes through the same graph."""
from __future__ import annotations

import numpy as np

from xopt.models.demucs import dsp
from xopt.models.demucs.pipeline import SOURCES, sources_of
from xopt.previews import audio, heatmap

RATE = 44100
NFFT = 2048
BANDS = 128  # log-spaced frequency rows from LOW_HZ to Nyquist: music's octaves get equal height
LOW_HZ = 40.0
FLOOR_DB = -100.0  # the colour scale's bottom, relative to the FP32 stem's loudest bin: FP16's error shows
WIDTH = 320
CLIP_SECONDS = 4.0


def log_spectrogram(wave: np.ndarray, ref_peak: float | None = None) -> tuple[np.ndarray, float]:
    """([BANDS, WIDTH] dB relative to `ref_peak` (default: this signal's peak power), the peak)."""
    mono = np.asarray(wave, np.float64).mean(axis=0)
    power = np.abs(dsp.stft(mono, NFFT)) ** 2  # [NFFT/2, frames]
    freqs = np.arange(power.shape[0]) * RATE / NFFT
    edges = np.geomspace(LOW_HZ, RATE / 2, BANDS + 1)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        idx = np.nonzero((freqs >= lo) & (freqs < hi))[0]
        if idx.size == 0:  # a band narrower than a bin: the nearest bin
            idx = [int(np.argmin(np.abs(freqs - np.sqrt(lo * hi))))]
        rows.append(power[idx].max(axis=0))
    bands = np.array(rows)[::-1]  # high frequencies on top
    peak = float(bands.max(initial=0.0)) if ref_peak is None else ref_peak
    db = 10.0 * np.log10(np.maximum(bands, 1e-20) / max(peak, 1e-20))
    cols = np.minimum((np.arange(WIDTH) * bands.shape[1] / WIDTH).astype(int), bands.shape[1] - 1)
    return np.maximum(db[:, cols], FLOOR_DB), peak


def _sdr(ref: np.ndarray, est: np.ndarray) -> float:
    err = np.sum((np.asarray(ref, np.float64) - est) ** 2)
    return float(10 * np.log10((np.sum(np.asarray(ref, np.float64) ** 2) + 1e-12) / (err + 1e-12)))


def previews(feeds, fp32_outputs, variant_outputs, out_dir) -> list[dict]:
    if not feeds:
        return []
    mix = np.asarray(feeds[0]["mix"], np.float64)[0]  # [C, L] of the first segment
    ref, out = sources_of(fp32_outputs[0])[0], sources_of(variant_outputs[0])[0]  # [S, C, L]
    names = SOURCES if len(ref) == len(SOURCES) else [f"source{i}" for i in range(len(ref))]
    seconds = mix.shape[-1] / RATE
    axes = (f"time 0–{seconds:.2f} s left to right; log frequency {LOW_HZ:.0f} Hz – {RATE / 2000:.1f} kHz bottom "
            f"to top; dB relative to the loudest bin of the FP32 stem (of the mix, here)")
    meta = {"input": 0, "input_label": f"synthetic music segment, {seconds:.2f} s stereo at {RATE} Hz "
                                       "(normalised as the graph sees it)"}
    scale = {"lo": FLOOR_DB, "hi": 0.0, "unit": " dB", "scale": "Magma"}
    db, _ = log_spectrogram(mix)
    recs = [heatmap(out_dir, "mix-spectrogram.png", db, "input", "mix", group="mix",
                    caption=axes + " (every spectrogram below reads the same way)", **scale, **meta),
            audio(out_dir, "mix.ogg", mix, RATE, "input", "mix", seconds=CLIP_SECONDS, group="mix", **meta)]
    for s, name in enumerate(names):
        group = {**meta, "group": name}
        db_ref, peak = log_spectrogram(ref[s])
        db_out, _ = log_spectrogram(out[s], peak)
        db_err, _ = log_spectrogram(out[s] - ref[s], peak)
        sdr = _sdr(ref[s], out[s])
        recs += [heatmap(out_dir, f"{name}-fp32.png", db_ref, "reference", f"{name}: FP32", **scale, **group),
                 audio(out_dir, f"{name}-fp32.ogg", ref[s], RATE, "reference", f"{name}: FP32",
                       seconds=CLIP_SECONDS, **group),
                 heatmap(out_dir, f"{name}-variant.png", db_out, "variant", f"{name}: variant", **scale, **group),
                 audio(out_dir, f"{name}-variant.ogg", out[s], RATE, "variant", f"{name}: variant",
                       seconds=CLIP_SECONDS, caption=f"SDR against FP32 {sdr:.1f} dB", **group),
                 heatmap(out_dir, f"{name}-difference.png", db_err, "difference", f"{name}: variant − FP32",
                         caption=f"the error signal on the stem's dB scale; SDR against FP32 {sdr:.1f} dB",
                         **scale, **group)]
    return recs
