"""Long tracks through a fixed-length model: demucs.apply's segmenting, in numpy.

Same offsets (stride = int((1 - overlap) * segment)), same triangular weight raised to
`transition_power`, same centred zero padding of short chunks taken from the surrounding
signal, same "shift trick" (pad by 0.5 s, random shift, undo, average). Segments are
grouped into batches so one session call can carry several (the fit search sizes that).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

RunBatch = Callable[[np.ndarray], np.ndarray]  # [B, C, seg] -> [B, S, C, seg]


@dataclass(frozen=True)
class Chunk:
    start: int  # in the coordinates of the base signal
    length: int  # samples of the chunk that land in the output
    out_offset: int  # where they land in the view's output


def transition_weight(segment: int, power: float = 1.0) -> np.ndarray:
    if power < 1:
        raise ValueError("transition_power < 1 gives degenerate weights")
    half = segment // 2
    w = np.concatenate([np.arange(1, half + 1), np.arange(segment - half, 0, -1)]).astype(np.float64)
    return (w / w.max()) ** power


def window(base: np.ndarray, start: int, length: int) -> np.ndarray:
    """base[..., start:start+length] with zeros where it falls outside the base signal."""
    out = np.zeros(base.shape[:-1] + (length,), dtype=base.dtype)
    lo, hi = max(0, start), min(base.shape[-1], start + length)
    if lo < hi:
        out[..., lo - start:hi - start] = base[..., lo:hi]
    return out


def plan(view_start: int, view_length: int, segment: int, overlap: float) -> list[Chunk]:
    stride = int((1 - overlap) * segment)
    if stride <= 0:
        raise ValueError(f"overlap {overlap} leaves no stride for segment {segment}")
    return [Chunk(view_start + off, min(view_length - off, segment), off) for off in range(0, view_length, stride)]


def _batched(items: Sequence, size: int) -> Iterable[Sequence]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def split_apply(run: RunBatch, base: np.ndarray, view_start: int, view_length: int, segment: int,
                overlap: float = 0.25, power: float = 1.0, batch: int = 1,
                progress: Callable[[Iterable], Iterable] | None = None) -> np.ndarray:
    """Weighted overlap-add of `run` over base[..., view_start:view_start+view_length] -> [S, C, view_length]."""
    chunks = plan(view_start, view_length, segment, overlap)
    weight = transition_weight(segment, power)
    out = None
    total = np.zeros(view_length)
    groups = list(_batched(chunks, max(1, batch)))
    for group in (progress(groups) if progress else groups):
        segs = []
        for c in group:
            delta = segment - c.length
            segs.append(window(base, c.start - delta // 2, segment))
        res = run(np.stack(segs).astype(np.float32))
        for c, r in zip(group, res):
            delta = segment - c.length
            r = r[..., delta // 2: delta // 2 + c.length].astype(np.float64)
            if out is None:
                out = np.zeros(r.shape[:-1] + (view_length,))
            w = weight[:c.length]
            out[..., c.out_offset:c.out_offset + c.length] += w * r
            total[c.out_offset:c.out_offset + c.length] += w
    return out / total


def apply_track(run: RunBatch, mix: np.ndarray, segment: int, samplerate: int = 44100, overlap: float = 0.25,
                power: float = 1.0, shifts: int = 0, batch: int = 1, rng: np.random.Generator | None = None,
                shift_offsets: Sequence[int] | None = None,
                progress: Callable[[Iterable], Iterable] | None = None) -> np.ndarray:
    """Sources [S, C, L] for a normalised mix [C, L], as `demucs.apply.apply_model(split=True)`.

    With `shifts` > 0 the track is zero-padded by half a second on both sides and run
    `shifts` times at random offsets in [0, 0.5 s] (or the given `shift_offsets`); the
    estimates are shifted back and averaged.
    """
    length = mix.shape[-1]
    if not shifts:
        return split_apply(run, mix, 0, length, segment, overlap, power, batch, progress)
    max_shift = int(0.5 * samplerate)
    padded = window(mix, -max_shift, length + 2 * max_shift)
    if shift_offsets is None:
        rng = rng or np.random.default_rng(0)
        shift_offsets = [int(rng.integers(0, max_shift + 1)) for _ in range(shifts)]
    if len(shift_offsets) != shifts:
        raise ValueError("need one offset per shift")
    out = 0.0
    for off in shift_offsets:
        est = split_apply(run, padded, off, length + max_shift - off, segment, overlap, power, batch, progress)
        out = out + est[..., max_shift - off:]
    return out / shifts
