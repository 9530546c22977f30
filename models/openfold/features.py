"""Model features for one chain, in numpy: AlphaFold2's monomer input pipeline (no templates).

The steps and constants are those of AlphaFold2's supplement (1.2.6-1.2.9) as OpenFold's
`data_transforms` apply them in predict mode: per recycling iteration the MSA is re-sampled
into clusters (query first) and extra rows, 15 % of cluster positions are BERT-masked
(10 % uniform residue, 10 % profile, 10 % unchanged, 70 % mask token), extra rows are
assigned to their nearest cluster (Hamming agreement, gaps ignored) for the cluster profile
and deletion mean, the extra MSA is cropped, and msa_feat / target_feat are assembled.
No torch and no OpenFold: the same batch feeds the ONNX path and OpenFold's own model.

The batch has AlphaFold's layout with a trailing recycling dimension. MSA padding is trimmed
to what the alignment holds (padded rows are fully masked and change no real output), so a
single sequence does not carry 512 + 1024 empty rows; at least one (masked) extra row stays.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from xopt.models.openfold.seq import Alignment, Query

# AlphaFold's residue order for `aatype` (index 20 = X, unknown); MSA rows add 21 = gap.
RESTYPES = "ARNDCQEGHILKMFPSTWYV"
RESTYPE_INDEX = {aa: i for i, aa in enumerate(RESTYPES)}
UNKNOWN, GAP, MASK_TOKEN = 20, 21, 22
MSA_INDEX = {**RESTYPE_INDEX, "X": UNKNOWN, "-": GAP}
# BERT masking (AlphaFold2 supplement 1.2.7; OpenFold's config.data.common.masked_msa)
UNIFORM_PROB, PROFILE_PROB, SAME_PROB, REPLACE_FRACTION = 0.1, 0.1, 0.1, 0.15


def aatype_indices(sequence: str) -> np.ndarray:
    return np.array([RESTYPE_INDEX.get(c, UNKNOWN) for c in sequence], dtype=np.int64)


def one_hot(x: np.ndarray, n: int) -> np.ndarray:
    return (x[..., None] == np.arange(n)).astype(np.float32)


def raw_features(query: Query, alignment: Alignment | None = None) -> dict[str, np.ndarray]:
    """The chain's unprocessed features: aatype, residue index, MSA (AlphaFold order) and deletions."""
    seq = query.sequence
    rows = alignment.rows if alignment is not None else [seq]
    dels = alignment.deletions if alignment is not None else [[0] * len(seq)]
    if rows[0] != seq:
        raise ValueError("the alignment's first row must be the query")
    return {"aatype": aatype_indices(seq), "residue_index": np.arange(len(seq), dtype=np.int64),
            "msa": np.array([[MSA_INDEX[c] for c in row] for row in rows], dtype=np.int64),
            "deletion_matrix": np.array(dels, dtype=np.float32)}


def _segment_sum(data: np.ndarray, ids: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((n,) + data.shape[1:], data.dtype)
    np.add.at(out, ids, data)
    return out


def _bert_mask(msa: np.ndarray, profile: np.ndarray, rng: np.random.Generator,
               replace_fraction: float) -> np.ndarray:
    random_aa = np.array([0.05] * 20 + [0.0, 0.0], np.float32)
    probs = UNIFORM_PROB * random_aa + PROFILE_PROB * profile[None] + SAME_PROB * one_hot(msa, 22)
    probs = np.concatenate([probs, np.full(probs.shape[:-1] + (1,), 1.0 - UNIFORM_PROB - PROFILE_PROB - SAME_PROB,
                                           np.float32)], axis=-1)
    cdf = np.cumsum(probs, axis=-1)
    draw = rng.random(msa.shape + (1,)) * cdf[..., -1:]
    sampled = np.minimum((draw > cdf).sum(axis=-1), MASK_TOKEN)
    return np.where(rng.random(msa.shape) < replace_fraction, sampled, msa)


def one_iteration(raw: Mapping[str, np.ndarray], clusters: int, extra: int, rng: np.random.Generator,
                  replace_fraction: float = REPLACE_FRACTION) -> dict:
    msa, dels, aatype = raw["msa"], raw["deletion_matrix"], raw["aatype"]
    rows, n = msa.shape
    profile = one_hot(msa, 22).mean(axis=0)
    order = np.concatenate([[0], 1 + rng.permutation(rows - 1)]).astype(np.int64)
    sel, rest = order[:clusters], order[clusters:]
    c_msa, c_del = _bert_mask(msa[sel], profile, rng, replace_fraction), dels[sel]
    c_mask = np.ones(c_msa.shape, np.float32)
    e_msa, e_del = msa[rest], dels[rest]
    e_mask = np.ones(e_msa.shape, np.float32)
    # nearest cluster by agreement over residue classes (gap and mask token weigh 0)
    weights = np.array([1.0] * 21 + [0.0, 0.0], np.float32)
    c_hot, e_hot = one_hot(c_msa, 23) * c_mask[..., None], one_hot(e_msa, 23) * e_mask[..., None]
    if len(rest):
        agreement = e_hot.reshape(len(rest), -1) @ (c_hot * weights).reshape(len(sel), -1).T
        assign = np.argmax(agreement, axis=1)
    else:
        assign = np.zeros(0, np.int64)
    counts = 1e-6 + c_mask + _segment_sum(e_mask, assign, len(sel))
    profile_c = (_segment_sum(e_mask[..., None] * one_hot(e_msa, 23), assign, len(sel)) + one_hot(c_msa, 23))
    profile_c = profile_c / counts[..., None]
    del_mean = (_segment_sum(e_mask * e_del, assign, len(sel)) + c_del) / counts
    keep = rng.permutation(len(rest))[:extra]
    e_msa, e_del, e_mask = e_msa[keep], e_del[keep], e_mask[keep]
    if len(keep) < extra:  # pad to the trimmed size: fully masked rows
        pad = extra - len(keep)
        e_msa = np.concatenate([e_msa, np.zeros((pad, n), np.int64)])
        e_del = np.concatenate([e_del, np.zeros((pad, n), np.float32)])
        e_mask = np.concatenate([e_mask, np.zeros((pad, n), np.float32)])
    scale = np.float32(2.0 / np.pi)
    msa_feat = np.concatenate([one_hot(c_msa, 23), np.clip(c_del, 0, 1)[..., None],
                               (np.arctan(c_del / 3.0) * scale)[..., None], profile_c,
                               (np.arctan(del_mean / 3.0) * scale)[..., None]], axis=-1).astype(np.float32)
    target_feat = np.concatenate([np.zeros((n, 1), np.float32), one_hot(aatype, 21)], axis=-1)
    return {"aatype": aatype.astype(np.int64), "residue_index": raw["residue_index"].astype(np.int64),
            "seq_mask": np.ones(n, np.float32), "target_feat": target_feat, "msa_feat": msa_feat,
            "msa_mask": c_mask, "extra_msa": e_msa.astype(np.int64),
            "extra_has_deletion": np.clip(e_del, 0, 1).astype(np.float32),
            "extra_deletion_value": (np.arctan(e_del / 3.0) * scale).astype(np.float32), "extra_msa_mask": e_mask}


def sizes(rows: int, msa_depth: int, extra_depth: int) -> tuple[int, int]:
    clusters = min(int(msa_depth), rows)
    return clusters, max(1, min(int(extra_depth), rows - clusters))


def make_batch(raw: Mapping[str, np.ndarray], msa_depth: int = 512, extra_depth: int = 1024, recycles: int = 3,
               seed: int = 0, replace_fraction: float = REPLACE_FRACTION) -> dict:
    """Features for `recycles + 1` iterations, stacked on a trailing axis (OpenFold's batch layout)."""
    clusters, extra = sizes(raw["msa"].shape[0], msa_depth, extra_depth)
    iters = [one_iteration(raw, clusters, extra, np.random.default_rng([int(seed), c]), replace_fraction)
             for c in range(int(recycles) + 1)]
    return {k: np.stack([it[k] for it in iters], axis=-1) for k in iters[0]}


def extra_msa_feat(extra_msa: np.ndarray, has_deletion: np.ndarray, deletion_value: np.ndarray) -> np.ndarray:
    """The extra-MSA stack's input features [E, N, 25] (AlphaFold2 supplement 1.2.9)."""
    return np.concatenate([one_hot(extra_msa, 23), has_deletion[..., None], deletion_value[..., None]],
                          axis=-1).astype(np.float32)
