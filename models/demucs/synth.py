"""Music-like test signals with their stems kept, so separation runs have references.

Four stems in demucs' order: drums (kick/snare/hat from shaped noise bursts), bass (a
harmonic bass line), other (sustained harmonic chords) and vocals (a glottal-pulse-like
harmonic series through moving vowel formants, with vibrato and syllables). numpy only,
deterministic for a seed; used by tests, profile inputs and the benchmark.
"""
from __future__ import annotations

import numpy as np

SOURCES = ("drums", "bass", "other", "vocals")
SAMPLERATE = 44100
_VOWELS = np.array([[730, 1090, 2440], [270, 2290, 3010], [530, 1840, 2480], [570, 840, 2410],
                    [300, 870, 2240]], dtype=np.float64)  # F1-F3 of a, i, e, o, u (Peterson-Barney)


def _midi(note: np.ndarray | float) -> np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(note, dtype=np.float64) - 69.0) / 12.0)


def _band_noise(rng, n: int, lo: float, hi: float, sr: int) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / sr)
    spec[(f < lo) | (f > hi)] = 0.0
    out = np.fft.irfft(spec, n)
    return out / (np.abs(out).max() + 1e-12)


def _place(track: np.ndarray, sound: np.ndarray, at: int) -> None:
    end = min(len(track), at + len(sound))
    if at < end:
        track[at:end] += sound[: end - at]


def _drums(rng, n: int, sr: int, beat: float) -> np.ndarray:
    out = np.zeros(n)
    t = np.arange(int(0.35 * sr)) / sr
    kick = np.sin(2 * np.pi * (45 * t + 60 * (1 - np.exp(-t * 30)) / 30)) * np.exp(-t * 9)
    snare_len, hat_len = int(0.2 * sr), int(0.06 * sr)
    step = int(beat * sr / 2)  # eighth notes
    for k, at in enumerate(range(0, n, step)):
        if k % 4 == 0:
            _place(out, kick * rng.uniform(0.8, 1.0), at)
        if k % 4 == 2:
            env = np.exp(-np.arange(snare_len) / sr * 25)
            _place(out, 0.6 * _band_noise(rng, snare_len, 180, 6000, sr) * env, at)
        env = np.exp(-np.arange(hat_len) / sr * 70)
        _place(out, 0.25 * rng.uniform(0.6, 1.0) * _band_noise(rng, hat_len, 7000, 16000, sr) * env, at)
    return out


def _notes(n: int, sr: int, dur: float, pitches: np.ndarray, harmonics: int, decay: float, attack: float) -> np.ndarray:
    """A sequence of harmonic notes, `dur` seconds each, pitch list cycled."""
    out = np.zeros(n)
    step = max(1, int(dur * sr))
    t = np.arange(step) / sr
    env = (1 - np.exp(-t / attack)) * np.exp(-t * decay)
    for i, at in enumerate(range(0, n, step)):
        f0s = np.atleast_1d(pitches[i % len(pitches)])
        note = np.zeros(step)
        for f0 in f0s:
            for h in range(1, harmonics + 1):
                if h * f0 < sr / 2.2:
                    note += np.sin(2 * np.pi * h * f0 * t + h) / h
        _place(out, note * env, at)
    return out


def _voice(rng, n: int, sr: int, beat: float) -> np.ndarray:
    t = np.arange(n) / sr
    melody = _midi(rng.choice([57, 60, 62, 64, 67, 69], size=max(1, int(n / (sr * beat)) + 1)))
    f0 = np.repeat(melody, int(beat * sr))[:n]
    f0 = f0 * (1 + 0.012 * np.sin(2 * np.pi * 5.5 * t))  # vibrato
    phase = 2 * np.pi * np.cumsum(f0) / sr
    syllable = int(beat * sr / 2)
    vowel = rng.integers(0, len(_VOWELS), size=n // syllable + 2)
    formants = np.repeat(_VOWELS[vowel], syllable, axis=0)[:n]  # [n, 3]
    out = np.zeros(n)
    for h in range(1, int(5000 / f0.min()) + 1):
        fh = h * f0
        gain = sum(np.exp(-0.5 * ((fh - formants[:, k]) / (60 + 40 * k)) ** 2) / (k + 1) for k in range(3))
        out += np.where(fh < sr / 2.2, gain, 0.0) * np.sin(h * phase)
    gate = 0.5 - 0.5 * np.cos(2 * np.pi * (np.arange(n) % syllable) / syllable)
    return out * gate


def generate(seconds: float, seed: int = 0, sr: int = SAMPLERATE, channels: int = 2) -> tuple[np.ndarray, dict]:
    """(mix [channels, L], {stem: [channels, L]}) with mix == sum of stems, peak 0.9."""
    rng = np.random.default_rng(seed)
    n = max(1, int(round(seconds * sr)))
    beat = 60.0 / rng.uniform(96, 132)
    root = rng.integers(38, 46)
    line = root + np.array([0, 0, 7, 5, 3, 3, 10, 7])
    chords = [_midi(root + 24 + np.array(c)) for c in ([0, 4, 7], [5, 9, 12], [7, 11, 14], [-3, 0, 4])]
    mono = {
        "drums": _drums(rng, n, sr, beat),
        "bass": 0.7 * _notes(n, sr, beat, _midi(line), 6, 2.5, 0.01),
        "other": 0.25 * _notes(n, sr, 4 * beat, np.array(chords, dtype=object), 5, 0.3, 0.08),
        "vocals": 0.35 * _voice(rng, n, sr, beat),
    }
    pans = {"drums": 0.5, "bass": 0.5, "other": rng.uniform(0.2, 0.4), "vocals": rng.uniform(0.45, 0.6)}
    stems = {}
    for name in SOURCES:
        gains = np.array([1 - pans[name], pans[name]]) * 2 if channels == 2 else np.ones(channels)
        stems[name] = np.outer(gains[:channels], mono[name])
    mix = sum(stems.values())
    scale = 0.9 / max(float(np.abs(mix).max()), 1e-9)
    stems = {k: (v * scale).astype(np.float32) for k, v in stems.items()}
    mix = sum(stems[k] for k in SOURCES)
    return mix.astype(np.float32), stems
