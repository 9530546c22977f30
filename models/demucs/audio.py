"""Audio in and out for the Demucs pipeline: a real audio library, no ffmpeg.

soundfile (libsndfile) reads WAV/FLAC/OGG/AIFF of any PCM width; soxr resamples to the
model rate. Everything is checked on the way in so a bad file becomes one clear error.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from xopt.atomic import atomic_path
from xopt.errors import UserError
from xopt.extras import require


def as_channels(wav: np.ndarray, channels: int = 2) -> np.ndarray:
    """[C, L] with the model's channel count: mono is duplicated, extra channels dropped
    (demucs' `convert_audio_channels`)."""
    wav = np.asarray(wav)
    if wav.ndim == 1:
        wav = wav[None]
    if wav.ndim != 2:
        raise UserError(f"audio must be [channels, samples] or [samples], got shape {wav.shape}",
                        "pass a 1-D or 2-D array")
    if wav.shape[0] > 16 and wav.shape[1] <= 16:
        raise UserError(f"audio of shape {wav.shape} looks like [samples, channels]", "transpose it to [channels, samples]")
    if wav.shape[0] == channels:
        return wav
    if wav.shape[0] == 1:
        return np.repeat(wav, channels, axis=0)
    if wav.shape[0] > channels:
        return wav[:channels]
    raise UserError(f"audio has {wav.shape[0]} channels, the model needs {channels}", "pass mono or stereo audio")


def validate(wav: np.ndarray, what: str = "audio") -> np.ndarray:
    wav = np.asarray(wav)
    if wav.dtype.kind not in "fiu":
        raise UserError(f"{what} has dtype {wav.dtype}", "pass float or integer PCM samples")
    if wav.shape[-1] == 0:
        raise UserError(f"{what} is empty (0 samples)", "pass a file with audio in it")
    if wav.dtype.kind in "iu":
        info = np.iinfo(wav.dtype)
        mid = (int(info.max) + int(info.min) + 1) / 2  # 0 for signed, 128 for uint8 PCM
        wav = (wav.astype(np.float64) - mid) / (info.max - mid + 1)
    wav = wav.astype(np.float32)
    if not np.isfinite(wav).all():
        bad = int((~np.isfinite(wav)).sum())
        raise UserError(f"{what} contains {bad} NaN/Inf samples", "fix or re-encode the audio")
    return wav


def resample(wav: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    if src_rate == dst_rate:
        return wav
    if src_rate <= 0:
        raise UserError(f"sample rate {src_rate} is invalid", "pass a positive sample rate")
    soxr = require("soxr", "demucs")
    out = soxr.resample(np.ascontiguousarray(wav.T, dtype=np.float32), src_rate, dst_rate, quality="HQ")
    return np.ascontiguousarray(np.asarray(out, dtype=np.float32).reshape(-1, wav.shape[0]).T)


def read(path, samplerate: int, channels: int = 2) -> np.ndarray:
    """[channels, L] float32 at `samplerate` from an audio file."""
    sf = require("soundfile", "demucs")
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no audio file at {path}", "check the path")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise UserError(f"cannot read {path} as audio ({str(exc).splitlines()[0][:200]})",
                        "pass a WAV, FLAC, OGG or AIFF file (MP3 needs converting first)") from exc
    wav = validate(data.T, str(path))
    return as_channels(resample(wav, int(rate), samplerate), channels)


def write(path, wav: np.ndarray, samplerate: int, force: bool = False, subtype: str = "FLOAT") -> Path:
    """One WAV file, written atomically (refuses to overwrite without `force`)."""
    sf = require("soundfile", "demucs")
    with atomic_path(path, force=force) as tmp:
        sf.write(str(tmp), np.ascontiguousarray(np.asarray(wav, dtype=np.float32).T), samplerate,
                 subtype=subtype, format="WAV")
    return Path(path)
