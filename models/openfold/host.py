"""Host-driven Evoformer / extra-MSA blocks: chunk loops in numpy around dynamic-N graphs.

m [S, N, c_m] and z [N, N, c_z] live in host memory (numpy, FP32 or FP16 storage) and are
updated in place, one chunk at a time; a graph only ever sees a chunk plus the few
[H, N, N]-sized tensors its chunk needs. Chunks are rows (or columns) of m and z, and tiles
of z for the triangle multiplications, so every call is a fixed graph over a dynamic chunk:
correct at any N, for any chunk size, without unrolled loops in a graph.

Order of writes. OpenFold adds each update after computing all of it; here a chunk's update
is added before the next chunk is computed, so each loop reads only what no earlier chunk
of the same update has written:
- row ops (row attention, transitions, triangle attention around the starting node, outer
  product rows): chunk r reads row r of the tensor it updates, plus inputs computed before
  the loop (pair biases, the outer product's projections);
- column ops (column attention, triangle attention around the ending node): the same on columns;
- triangle multiplication, outgoing: x[i, j] = sum_k a[i, k] b[j, k]. b of every row is stored
  first; then for each row block i, a_i is projected from rows i (untouched so far) and the
  tiles (i, j) are added. Incoming: x[i, j] = sum_k a[k, i] b[k, j]. a^T is stored first;
  then for each column block j, b_j is projected from columns j (untouched so far).

`sessions[name].run(feeds) -> {output: array}` is any xopt Session (or a torch stand-in).
"""
from __future__ import annotations

from typing import Callable, Iterator, Mapping

import numpy as np

STORAGE = {"fp32": np.float32, "fp16": np.float16}


def spans(n: int, chunk: int | None) -> Iterator[tuple[int, int]]:
    step = n if not chunk else max(1, int(chunk))
    for a in range(0, n, step):
        yield a, min(n, a + step)


def f32(x) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


class StackRunner:
    """Runs the blocks of one stack ("evo" or "extra") through its graphs."""

    def __init__(self, sessions: Mapping, stack: str, blocks: int, chunk: int | None = None,
                 attn_chunk: int | None = None, storage: str = "fp32", tick: Callable | None = None):
        if storage not in STORAGE:
            from xopt.errors import UserError

            raise UserError(f"unknown storage {storage!r} for the OpenFold trunk", f"use one of {', '.join(STORAGE)}")
        self.g = {kind: sessions[f"{stack}.{kind}"] for kind in
                  ("row_bias", "row_att", "col_att", "msa_trans", "opm_proj", "opm_rows", "tm_proj", "tm_tile",
                   "ta_bias", "ta_rows", "pair_trans")}
        self.blocks, self.chunk, self.storage = blocks, chunk, STORAGE[storage]
        self.attn_chunk = attn_chunk or chunk
        self.tick = tick or (lambda what: None)

    def _run(self, kind: str, index: int, **feeds) -> dict:
        return self.g[kind].run({"index": np.array([index], dtype=np.int64), **feeds})

    def __call__(self, m: np.ndarray, z: np.ndarray, msa_mask: np.ndarray, pair_mask: np.ndarray,
                 first: int = 0, count: int | None = None) -> None:
        """Blocks first .. first+count-1, in place on m and z."""
        msa_mask, pair_mask = f32(msa_mask), f32(pair_mask)
        for b in range(first, first + (self.blocks - first if count is None else count)):
            self.msa_ops(b, m, z, msa_mask)
            self.pair_ops(b, m, z, msa_mask, pair_mask)
            self.tick(f"block {b + 1}/{self.blocks}")

    # ------------------------------------------------------------------ MSA
    def msa_ops(self, b: int, m, z, msa_mask) -> None:
        s_len, n = m.shape[:2]
        bias = None
        for i0, i1 in spans(n, self.chunk):
            out = self._run("row_bias", b, z=f32(z[i0:i1]))["bias"]
            if bias is None:
                bias = np.empty((out.shape[0], n, n), np.float32)
            bias[:, i0:i1] = out
        for s0, s1 in spans(s_len, self.attn_chunk):
            m[s0:s1] += self._run("row_att", b, m=f32(m[s0:s1]), mask=msa_mask[s0:s1], bias=bias)["update"]
        del bias
        for c0, c1 in spans(n, self.attn_chunk):
            m[:, c0:c1] += self._run("col_att", b, m=f32(m[:, c0:c1]), mask=f32(msa_mask[:, c0:c1]))["update"]
        for s0, s1 in spans(s_len, self.chunk):
            m[s0:s1] += self._run("msa_trans", b, m=f32(m[s0:s1]))["update"]

    # ------------------------------------------------------------------ pair
    def pair_ops(self, b: int, m, z, msa_mask, pair_mask) -> None:
        s_len, n = m.shape[:2]
        # outer product mean: a, b of every row first ([N, S, c] so residue rows are contiguous)
        a_t = b_t = None
        for s0, s1 in spans(s_len, self.chunk):
            out = self._run("opm_proj", b, m=f32(m[s0:s1]), mask=msa_mask[s0:s1])
            if a_t is None:
                a_t = np.empty((n, s_len, out["a"].shape[-1]), self.storage)
                b_t = np.empty_like(a_t)
            a_t[:, s0:s1], b_t[:, s0:s1] = out["a"], out["b"]
        b_in = f32(b_t)  # one FP32 copy for all row calls when stored in FP16
        for i0, i1 in spans(n, self.chunk):
            z[i0:i1] += self._run("opm_rows", b, a=f32(a_t[i0:i1]), b=b_in, mask_rows=f32(msa_mask[:, i0:i1]),
                                  mask=msa_mask)["update"]
        del b_in
        del a_t, b_t
        self.tri_mul_out(b, z, pair_mask)
        self.tri_mul_in(b, z, pair_mask)
        self.tri_att(b, z, pair_mask, ending=False)
        self.tri_att(b, z, pair_mask, ending=True)
        for i0, i1 in spans(n, self.chunk):
            z[i0:i1] += self._run("pair_trans", b, z=f32(z[i0:i1]))["update"]

    def _proj(self, b: int, which: int, z_part, mask_part) -> np.ndarray:
        return self._run("tm_proj", 4 * b + which, z=f32(z_part), mask=f32(mask_part))["p"]

    def tri_mul_out(self, b: int, z, pair_mask) -> None:
        n = z.shape[0]
        store = None  # store[c, j, k] = b[j, k, c]: channels first, so a tile's rows are contiguous
        for j0, j1 in spans(n, self.chunk):
            p = self._proj(b, 1, z[j0:j1], pair_mask[j0:j1])
            if store is None:
                store = np.empty((p.shape[0], n, n), self.storage)
            store[:, j0:j1] = p
        for i0, i1 in spans(n, self.chunk):
            a_i = self._proj(b, 0, z[i0:i1], pair_mask[i0:i1])
            for j0, j1 in spans(n, self.chunk):
                z[i0:i1, j0:j1] += self._run("tm_tile", 2 * b, a=a_i, b=f32(store[:, j0:j1]),
                                             z=f32(z[i0:i1, j0:j1]))["update"]

    def tri_mul_in(self, b: int, z, pair_mask) -> None:
        n = z.shape[0]
        store = None  # store[c, i, k] = a[k, i, c]
        for k0, k1 in spans(n, self.chunk):
            p = self._proj(b, 2, z[k0:k1], pair_mask[k0:k1])  # [c, k, i]
            if store is None:
                store = np.empty((p.shape[0], n, n), self.storage)
            store[:, :, k0:k1] = p.transpose(0, 2, 1)
        for j0, j1 in spans(n, self.chunk):
            b_j = f32(self._proj(b, 3, z[:, j0:j1], pair_mask[:, j0:j1]).transpose(0, 2, 1))  # [c, j, k]
            for i0, i1 in spans(n, self.chunk):
                z[i0:i1, j0:j1] += self._run("tm_tile", 2 * b + 1, a=f32(store[:, i0:i1]), b=b_j,
                                             z=f32(z[i0:i1, j0:j1]))["update"]

    def tri_att(self, b: int, z, pair_mask, ending: bool) -> None:
        """Around the starting node on rows of z; around the ending node on rows of z^T."""
        n = z.shape[0]
        idx = 2 * b + int(ending)
        rows = (lambda a, c: z[:, a:c].transpose(1, 0, 2)) if ending else (lambda a, c: z[a:c])
        mask = pair_mask.T if ending else pair_mask
        bias = None
        for i0, i1 in spans(n, self.chunk):
            out = self._run("ta_bias", idx, z=f32(rows(i0, i1)))["bias"]
            if bias is None:
                bias = np.empty((out.shape[0], n, n), np.float32)
            bias[:, i0:i1] = out
        for i0, i1 in spans(n, self.attn_chunk):
            upd = self._run("ta_rows", idx, z=f32(rows(i0, i1)), mask=f32(mask[i0:i1]), bias=bias)["update"]
            if ending:
                z[:, i0:i1] += upd.transpose(1, 0, 2)
            else:
                z[i0:i1] += upd


def run_rows(session, n: int, chunk: int | None, make_feed: Callable[[int, int], dict]) -> dict:
    """Call `session` over row spans of n; concatenate each output along its first axis."""
    parts: dict[str, list] = {}
    for a, c in spans(n, chunk):
        for k, v in session.run(make_feed(a, c)).items():
            parts.setdefault(k, []).append(v)
    return {k: v[0] if len(v) == 1 else np.concatenate(v, axis=0) for k, v in parts.items()}
