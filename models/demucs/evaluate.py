"""Demucs against MUSDB18-HQ references (`xopt eval demucs`): the spec's EvalHooks.

Scores are computed at the reference's sample rate and channel count: an estimate at another
rate is resampled (soxr), a mono one duplicated, and lengths are trimmed to the shorter; each
is noted in the report. BSS Eval v4 comes from museval's own metrics module; `sdr_plain` is
the fast MDX/demucs SDR over the whole track.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from xopt.models.demucs import sdr as sdrlib
from xopt.models.demucs.eval_data import STEMS, audio_file, read_audio

WINDOW_S = 1.0  # museval / SiSEC 2018: 1 s windows and hops


def method(bss: bool = True) -> str:
    from importlib.metadata import PackageNotFoundError, version

    plain = ("sdr_plain: 10·log10(Σref²/Σ(ref−est)²) per stem over the whole track (MDX/demucs), mean over stems "
             "and tracks; scored at the references' sample rate")
    if not bss:
        return "BSS Eval (museval) not run (--sdr plain); " + plain

    try:
        v = version("museval")
    except PackageNotFoundError:
        v = "(not installed)"
    return (f"SDR/ISR/SIR/SAR in dB: museval {v} BSS Eval v4 (1 s windows and hops, median over frames, then "
            "median over tracks per stem as SiSEC 2018; sdr: the mean of the four stems' medians; sir, sar, isr: the "
            "median over tracks of the stems' mean), "
            "run from museval/metrics.py itself (its package import needs ffmpeg); " + plain)


def _mixture(item, rate: int, channels: int) -> np.ndarray:
    from xopt.models.demucs import audio

    wav, src_rate = read_audio(item.input, item.meta.get("frames"))
    return audio.as_channels(audio.resample(wav, src_rate, rate), channels)


def predict(pipeline, item) -> dict:
    cfg = pipeline.cfg
    mix = _mixture(item, cfg["samplerate"], cfg["audio_channels"])
    stems = pipeline(mix)
    return {"stems": stems, "samplerate": int(cfg["samplerate"]), "mixture": mix,
            "model": {"samplerate": int(cfg["samplerate"]), "channels": int(cfg["audio_channels"])}}


def prediction_paths(directory: Path, item) -> list[Path]:
    """DIR/<track>/<stem>.wav (what `xopt run demucs` writes), FLAC accepted."""
    folder = Path(directory) / item.name
    return [audio_file(folder, s) or folder / f"{s}.wav" for s in STEMS]


def read_prediction(directory: Path, item) -> dict:
    stems, rates = {}, set()
    for s, path in zip(STEMS, prediction_paths(directory, item)):
        stems[s], rate = read_audio(path)
        rates.add(rate)
    if len(rates) > 1:
        from xopt.errors import UserError

        raise UserError(f"the stems in {Path(directory) / item.name} have different sample rates ({sorted(rates)})",
                        "write every stem of a track at one sample rate")
    rate = rates.pop()
    src = item.meta["source"]
    return {"stems": stems, "samplerate": rate, "mixture": None, "model": {"samplerate": rate,
                                                                          "channels": src["channels"]}}


def _to_reference(est: np.ndarray, est_rate: int, ref_rate: int, channels: int, name: str, notes: list) -> np.ndarray:
    from xopt.models.demucs import audio

    if est_rate != ref_rate:
        notes.append(f"{name}: estimate at {est_rate} Hz resampled to the reference's {ref_rate} Hz")
        est = audio.resample(est, est_rate, ref_rate)
    if est.shape[0] != channels:
        notes.append(f"{name}: estimate has {est.shape[0]} channels, the reference {channels}")
        est = audio.as_channels(est, channels)
    return est


def references(item) -> tuple[np.ndarray, int, list[str]]:
    """[S, C, L] references at their own rate (the mixture's), trimmed to a common length."""
    from xopt.models.demucs import audio

    notes, wavs, rate = [], [], item.meta["source"]["samplerate"]
    for s in STEMS:
        wav, r = read_audio(item.reference[s], None)
        if r != rate:
            notes.append(f"{item.name}/{s}: reference at {r} Hz resampled to the mixture's {rate} Hz")
            wav = audio.resample(wav, r, rate)
        wavs.append(wav[:, :item.meta["frames"]])
    return _trim(wavs, item.name, "references", notes), rate, notes


def _trim(wavs: list, name: str, what: str, notes: list) -> np.ndarray:
    n = min(w.shape[-1] for w in wavs)
    if any(w.shape[-1] - n > 1 for w in wavs):
        notes.append(f"{name}: {what} trimmed to the shortest ({n} samples; longest {max(w.shape[-1] for w in wavs)})")
    c = max(w.shape[0] for w in wavs)
    return np.stack([np.broadcast_to(w[:, :n], (c, n)) for w in wavs])


def bss_eval(refs: np.ndarray, ests: np.ndarray, rate: int) -> dict[str, np.ndarray]:
    """museval's BSS Eval v4 on [S, C, L]: per stem the median over 1 s frames of SDR, ISR, SIR, SAR."""
    metrics = sdrlib.museval_metrics()
    win = int(WINDOW_S * rate)
    r = np.moveaxis(np.asarray(refs, np.float64), -1, -2)  # museval wants [S, L, C]
    e = np.moveaxis(np.asarray(ests, np.float64), -1, -2)
    sdr, isr, sir, sar, _ = metrics.bss_eval(r, e, window=win, hop=win, compute_permutation=False, filters_len=512,
                                             framewise_filters=False, bsseval_sources_version=False)

    def med(a):  # frames where a reference is silent are NaN; a silent stem is NaN overall
        return np.array([np.nanmedian(x) if np.isfinite(x).any() else np.nan for x in a])

    return {"sdr": med(sdr), "isr": med(isr), "sir": med(sir), "sar": med(sar)}


def score(item, output: Mapping[str, Any]) -> dict:
    refs, rate, notes = references(item)
    c = refs.shape[1]
    ests = [_to_reference(np.asarray(output["stems"][s], np.float32), output["samplerate"], rate, c,
                          f"{item.name}/{s}", notes) for s in STEMS]
    n = min(refs.shape[-1], min(e.shape[-1] for e in ests))
    if abs(refs.shape[-1] - min(e.shape[-1] for e in ests)) > 1:
        notes.append(f"{item.name}: estimates ({min(e.shape[-1] for e in ests)} samples) and references "
                     f"({refs.shape[-1]}) trimmed to {n}")
    refs = refs[..., :n]
    ests = np.stack([e[:, :n] for e in ests])
    plain = sdrlib.per_source(refs, ests)
    parts = {s: {"sdr_plain": float(plain[i])} for i, s in enumerate(STEMS)}
    out = {"sdr_plain": float(np.mean(plain))}
    if item.meta.get("museval", True):
        bss = bss_eval(refs, ests, rate)
        for i, s in enumerate(STEMS):
            parts[s].update({k: float(bss[k][i]) for k in ("sdr", "isr", "sir", "sar")})
            out[f"sdr_{s}"] = parts[s]["sdr"]
        for key in ("sdr", "sir", "sar", "isr"):
            out[key] = _nanmean([parts[s][key] for s in STEMS])
    return {**out, "parts": parts, "notes": notes}


def _nanmean(values) -> float:
    a = np.asarray(values, np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")


def _nanmedian(values) -> float:
    a = np.asarray(values, np.float64)
    a = a[np.isfinite(a)]
    return float(np.median(a)) if a.size else float("nan")


def aggregate(scores: list[dict]) -> dict:
    """SiSEC: per stem, the median over tracks of the track's (frame-median) SDR; `sdr` the mean of
    those four medians; sir/sar/isr the median over tracks of each track's mean over stems."""
    out = {"sdr_plain": _nanmean([x["sdr_plain"] for x in scores])}
    if all("sdr" in x for x in scores):
        out.update({f"sdr_{s}": _nanmedian([x[f"sdr_{s}"] for x in scores]) for s in STEMS})
        out["sdr"] = _nanmean([out[f"sdr_{s}"] for s in STEMS])
        for key in ("sir", "sar", "isr"):
            out[key] = _nanmedian([x[key] for x in scores])
    return out


def item_checks(item, output: Mapping[str, Any], info: Mapping[str, Any] | None = None) -> list[dict]:
    from xopt.models.demucs.checks import checks

    mix = output["mixture"]
    if mix is None:  # saved predictions: the mixture at their rate, for the consistency check
        m = output["model"]
        mix = _mixture(item, m["samplerate"], m["channels"])
    src = item.meta["source"]
    raw, rate = read_audio(item.input, item.meta.get("frames"))
    return checks(mix, output["stems"], {**(info or {}), "source": {**src, "wav": raw, "samplerate": rate},
                                         "model": output["model"]})
