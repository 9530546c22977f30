"""Long tracks through a fixed-length model: demucs.apply's segmenting, in numpy.

Same offsets (stride = int((1 - overlap) * segment)), same triangular weight raised to
`transition_power`, same centred zero padding of short chunks taken from the surrounding
signal, same "shift trick" (pad by 0.5 s, random shift, undo, average). Segments are
grouped into batches so one session call can carry several (the fit search sizes that).
"""
from __future__ import annotations

from dataclasses import dataclass
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Sequence

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
                progress: Callable[[Iterable], Iterable] | None = None,
                finish: Callable[[Any], np.ndarray] | None = None,
                prepare: Callable[[np.ndarray], Any] | None = None) -> np.ndarray:
    """Weighted overlap-add of `run` over base[..., view_start:view_start+view_length] -> [S, C, view_length].

    With `prepare` and/or `finish` the work is split in three: prepare(segments) -> feed (the
    STFT), run(feed) -> raw outputs (the session), finish(raw) -> sources [B, S, C, seg] (the
    iSTFT). `run` stays on the caller's thread; one helper thread prepares the next batch and
    finishes + overlap-adds the previous one meanwhile (ONNX Runtime and numpy's FFT release
    the GIL). One batch is finished at a time, in order, so the sums are the same numbers in
    the same order as with run = finish . run . prepare: identical output.
    """
    chunks = plan(view_start, view_length, segment, overlap)
    weight = transition_weight(segment, power)
    state: dict = {}
    total = np.zeros(view_length)
    groups = list(_batched(chunks, max(1, batch)))

    def add(group: Sequence[Chunk], res: np.ndarray) -> None:
        for c, r in zip(group, res):
            delta = segment - c.length
            r = r[..., delta // 2: delta // 2 + c.length]
            if "out" not in state:
                state["out"] = np.zeros(r.shape[:-1] + (view_length,))
            w = weight[:c.length]
            state["out"][..., c.out_offset:c.out_offset + c.length] += w * r
            total[c.out_offset:c.out_offset + c.length] += w

    def segments(group: Sequence[Chunk]) -> np.ndarray:
        segs = np.empty((len(group),) + base.shape[:-1] + (segment,), dtype=np.float32)
        for i, c in enumerate(group):
            segs[i] = window(base, c.start - (segment - c.length) // 2, segment)
        return segs

    if finish is None and prepare is None:
        for group in (progress(groups) if progress else groups):
            add(group, run(segments(group)))
        return state["out"] / total
    prepare = prepare or (lambda segs: segs)
    finish = finish or (lambda raw: raw)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ola-host") as pool:
        feed = pool.submit(lambda: prepare(segments(groups[0])))
        pending = None
        for i, group in enumerate(progress(groups) if progress else groups):
            ready = feed.result()  # prepared during the previous run
            if i + 1 < len(groups):  # queued behind the previous batch's finishing: runs during this run
                feed = pool.submit(lambda g=groups[i + 1]: prepare(segments(g)))
            raw = run(ready)
            del ready
            pending = pool.submit(lambda g=group, r=raw: add(g, finish(r)))
            del raw
        pending.result()
    return state["out"] / total


def apply_track(run: RunBatch, mix: np.ndarray, segment: int, samplerate: int = 44100, overlap: float = 0.25,
                power: float = 1.0, shifts: int = 0, batch: int = 1, rng: np.random.Generator | None = None,
                shift_offsets: Sequence[int] | None = None,
                progress: Callable[[Iterable], Iterable] | None = None,
                finish: Callable[[Any], np.ndarray] | None = None,
                prepare: Callable[[np.ndarray], Any] | None = None) -> np.ndarray:
    """Sources [S, C, L] for a normalised mix [C, L], as `demucs.apply.apply_model(split=True)`.

    With `shifts` > 0 the track is zero-padded by half a second on both sides and run
    `shifts` times at random offsets in [0, 0.5 s] (or the given `shift_offsets`); the
    estimates are shifted back and averaged. `prepare`, `finish`: see `split_apply`.
    """
    length = mix.shape[-1]
    if not shifts:
        return split_apply(run, mix, 0, length, segment, overlap, power, batch, progress, finish, prepare)
    max_shift = int(0.5 * samplerate)
    padded = window(mix, -max_shift, length + 2 * max_shift)
    if shift_offsets is None:
        rng = rng or np.random.default_rng(0)
        shift_offsets = [int(rng.integers(0, max_shift + 1)) for _ in range(shifts)]
    if len(shift_offsets) != shifts:
        raise ValueError("need one offset per shift")
    out = 0.0
    for off in shift_offsets:
        est = split_apply(run, padded, off, length + max_shift - off, segment, overlap, power, batch, progress,
                          finish, prepare)
        out = out + est[..., max_shift - off:]
    return out / shifts
