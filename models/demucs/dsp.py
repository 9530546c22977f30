"""Demucs' signal processing outside the graph, in numpy only.

The exported core starts after the STFT and stops before the iSTFT (complex tensors,
a data-dependent assert and an iSTFT that unrolls into ~176k nodes keep them out of
ONNX). These functions reproduce `HTDemucs._spec`/`_magnitude` (analysis) and
`_mask`/`_ispec` (synthesis) of demucs 4 numerically, so host + core equals the
PyTorch model; the tests hold them to ~1e-6 of demucs' own torch code.
"""
from __future__ import annotations

import functools
import math

import numpy as np

NFFT = 4096


def hann(n: int) -> np.ndarray:
    """Periodic Hann window, as `torch.hann_window(n)`."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def frames_for(length: int, nfft: int = NFFT) -> int:
    """Time frames of the spectrogram demucs builds for `length` samples."""
    return int(math.ceil(length / (nfft // 4)))


def spec_shape(length: int, channels: int = 2, nfft: int = NFFT) -> tuple[int, int, int]:
    """(CaC channels, frequencies, frames) of the core's `spec` input."""
    return 2 * channels, nfft // 2, frames_for(length, nfft)


def _pad_reflect(x: np.ndarray, left: int, right: int) -> np.ndarray:
    """Reflect padding that, like demucs' `pad1d`, first zero-extends inputs too short to reflect."""
    length = x.shape[-1]
    widths = [(0, 0)] * (x.ndim - 1)
    biggest = max(left, right)
    if length <= biggest:
        extra = biggest - length + 1
        extra_right = min(right, extra)
        extra_left = extra - extra_right
        x = np.pad(x, widths + [(extra_left, extra_right)])
        left, right = left - extra_left, right - extra_right
    return np.pad(x, widths + [(left, right)], mode="reflect")


def stft(x: np.ndarray, nfft: int = NFFT) -> np.ndarray:
    """Complex spectrogram [..., nfft/2, frames] of `x` [..., L] as `HTDemucs._spec` computes it.

    demucs pads by 3/4 hop on the left so frame k is centred on sample k*hop (+ a fixed
    offset), drops the Nyquist bin and the 2 edge frames on each side; the frames kept
    never reach torch.stft's own centre padding, so they are plain windows of the padded signal.
    """
    x = np.asarray(x, dtype=np.float64)
    hop = nfft // 4
    length = x.shape[-1]
    n = frames_for(length, nfft)
    pad = hop // 2 * 3
    xp = _pad_reflect(x, pad, pad + n * hop - length)
    windows = np.lib.stride_tricks.sliding_window_view(xp, nfft, axis=-1)[..., ::hop, :][..., :n, :]
    z = np.fft.rfft(windows * hann(nfft), n=nfft, axis=-1)[..., : nfft // 2] / math.sqrt(nfft)
    return np.swapaxes(z, -1, -2)


def to_cac(z: np.ndarray) -> np.ndarray:
    """Complex [B, C, F, T] -> real [B, 2C, F, T] with channels (c0.re, c0.im, c1.re, ...)."""
    b, c, f, t = z.shape
    out = np.empty((b, c, 2, f, t), dtype=np.float32)
    out[:, :, 0] = z.real
    out[:, :, 1] = z.imag
    return out.reshape(b, 2 * c, f, t)


def from_cac(m: np.ndarray) -> np.ndarray:
    """Real [B, S, 2C, F, T] -> complex [B, S, C, F, T] (demucs' `_mask` for CaC models)."""
    b, s, c2, f, t = m.shape
    m = np.asarray(m, dtype=np.float64).reshape(b, s, c2 // 2, 2, f, t)
    return m[:, :, :, 0] + 1j * m[:, :, :, 1]


def core_spec(mix: np.ndarray, nfft: int = NFFT) -> np.ndarray:
    """The core's `spec` input for a batch of segments `mix` [B, C, L] (float32)."""
    return to_cac(stft(mix, nfft))


def istft(z: np.ndarray, length: int) -> np.ndarray:
    """Waveform [..., length] from demucs' spectrogram z [..., nfft/2, frames] (`HTDemucs._ispec`).

    Restores the dropped Nyquist bin and the 2 edge frames as zeros, then does torch.istft's
    normalised inverse (irfft * sqrt(n), Hann synthesis window, overlap-add, divide by the
    summed squared window) and cuts demucs' 3/4-hop padding off.
    """
    freqs, frames = z.shape[-2:]
    nfft = 2 * freqs
    hop = nfft // 4
    pad = hop // 2 * 3
    full = np.zeros(z.shape[:-2] + (frames + 4, freqs + 1), dtype=np.complex128)
    full[..., 2:2 + frames, :freqs] = np.swapaxes(z, -1, -2)
    win = hann(nfft)
    seg = np.fft.irfft(full, n=nfft, axis=-1) * math.sqrt(nfft) * win  # [..., N, nfft]
    n = frames + 4
    quarters = seg.reshape(seg.shape[:-1] + (4, hop))
    ola = np.zeros(seg.shape[:-2] + (n + 3, hop))
    env = np.zeros((n + 3, hop))
    wq = (win ** 2).reshape(4, hop)
    for k in range(4):
        ola[..., k:k + n, :] += quarters[..., :, k, :]
        env[k:k + n] += wq[k]
    ola = ola.reshape(ola.shape[:-2] + (-1,))
    env = env.reshape(-1)
    start = nfft // 2 + pad  # torch.istft's centre trim, then demucs' own padding
    sl = slice(start, start + length)
    return ola[..., sl] / env[sl]


@functools.lru_cache(maxsize=8)
def _synthesis(nfft: int, frames: int, length: int) -> tuple[np.ndarray, np.ndarray, int]:
    """float32 (sqrt(nfft)-scaled Hann window, 1 / summed squared window over the kept samples, start)."""
    hop = nfft // 4
    win = hann(nfft)
    n = frames + 4
    env = np.zeros((n + 3, hop))
    wq = (win ** 2).reshape(4, hop)
    for k in range(4):
        env[k:k + n] += wq[k]
    start = nfft // 2 + hop // 2 * 3
    inv = 1.0 / env.reshape(-1)[start:start + length]
    return (win * math.sqrt(nfft)).astype(np.float32), inv.astype(np.float32), start


def istft_cac(m: np.ndarray, length: int, out: np.ndarray | None = None) -> np.ndarray:
    """float32 `istft(from_cac(m), length)` for the core's CaC output m [..., 2C, F, T] -> [..., C, length].

    What demucs computes (torch.istft runs in float32 too), without the float64/complex128
    copies: the 4 zero edge frames are never transformed, frames go straight from the CaC
    layout into a contiguous complex64 [..., T, F] array (one pass), irfft in single precision
    (numpy >= 2), then a 4-way overlap-add of quarter frames. With `out` ([..., C, length],
    float32) the result is added into it in place (the time branch), saving one more pass.
    """
    *lead, c2, freqs, frames = m.shape
    nfft = 2 * freqs
    hop = nfft // 4
    win, inv, start = _synthesis(nfft, frames, length)
    m = np.asarray(m, dtype=np.float32).reshape(*lead, c2 // 2, 2, freqs, frames)
    z = np.empty((*lead, c2 // 2, frames, freqs), dtype=np.complex64)
    z.real = np.swapaxes(m[..., 0, :, :], -1, -2)
    z.imag = np.swapaxes(m[..., 1, :, :], -1, -2)
    seg = np.fft.irfft(z, n=nfft, axis=-1)  # [..., T, nfft] float32 (frames 2 .. T+1 of the padded STFT)
    del z
    seg *= win
    quarters = seg.reshape(seg.shape[:-1] + (4, hop))
    acc = np.zeros(seg.shape[:-2] + (frames + 7, hop), dtype=np.float32)
    for k in range(4):
        acc[..., 2 + k:2 + k + frames, :] += quarters[..., :, k, :]
    del seg, quarters
    wave = acc.reshape(acc.shape[:-2] + (-1,))[..., start:start + length]
    if out is None:
        return wave * inv
    out += wave * inv
    return out


def reassemble(spec_out: np.ndarray, wave_out: np.ndarray) -> np.ndarray:
    """Sources [B, S, C, L]: the core's time branch plus the iSTFT of its spectral branch (float32)."""
    return istft_cac(spec_out, wave_out.shape[-1], out=np.array(wave_out, dtype=np.float32, copy=True))


def track_stats(wav: np.ndarray) -> tuple[float, float]:
    """Track-level normalisation of demucs' `Separator`: mean and (unbiased std + 1e-8) of the mono mix."""
    mono = np.asarray(wav, dtype=np.float64).mean(axis=0)
    std = float(mono.std(ddof=1)) if mono.size > 1 else 0.0
    return float(mono.mean()), std + 1e-8
