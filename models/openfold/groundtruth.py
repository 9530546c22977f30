"""A predicted chain against a reference structure, in the terms structure prediction uses.

Residues are matched by a global sequence alignment (Biopython's PairwiseAligner, BLOSUM62,
end gaps free), so a reference with missing loops, extra tags or other numbering still pairs
residue for residue. On the matched C-alphas:
- ca_rmsd: RMSD after optimal superposition (Biopython's SVDSuperimposer);
- gdt_ts: mean over 1/2/4/8 Angstrom of the largest fraction of reference residues within the
  cutoff under any superposition, searched as the TM-score program does (superpositions seeded
  on fragments of length L, L/2, ... 4 and grown on the residues within the cutoff);
- lddt_ca: global lDDT of the C-alphas (15 Angstrom inclusion radius, 0.5/1/2/4 thresholds);
- tm_score: TM-score normalised by the reference's length, from TM-align's own code (tmtools)
  held to the sequence alignment (TM-align -I), i.e. the standard d0 = 1.24 (L - 15)^(1/3) - 1.8.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from xopt.extras import require
from xopt.models.openfold.metrics import GDT_THRESHOLDS, kabsch, lddt_ca


@lru_cache(maxsize=1)
def _aligner():
    require("Bio", "openfold", "to align sequences")
    from Bio.Align import PairwiseAligner, substitution_matrices

    a = PairwiseAligner(mode="global")
    a.substitution_matrix = substitution_matrices.load("BLOSUM62")
    a.open_gap_score, a.extend_gap_score = -10.0, -0.5  # EMBOSS needle's defaults
    a.target_end_gap_score = a.query_end_gap_score = 0.0
    return a


def _clean(seq: str) -> str:
    return "".join(c if c in "ACDEFGHIKLMNPQRSTVWY" else "X" for c in seq.upper())


def align(pred_seq: str, ref_seq: str):
    return _aligner().align(_clean(pred_seq), _clean(ref_seq))[0]


def matched(pred_seq: str, ref_seq: str) -> tuple[np.ndarray, np.ndarray, tuple[str, str]]:
    """(prediction indices, reference indices, gapped alignment strings) of aligned residues."""
    aln = align(pred_seq, ref_seq)
    pi, ri = [], []
    gp, gr = [], []
    p0 = r0 = 0
    for (ps, pe), (rs, re) in zip(*aln.aligned):
        gp.append(pred_seq[p0:ps] + "-" * (rs - r0))  # unaligned stretches as gaps on the other side
        gr.append("-" * (ps - p0) + ref_seq[r0:rs])
        gp.append(pred_seq[ps:pe])
        gr.append(ref_seq[rs:re])
        pi.extend(range(ps, pe))
        ri.extend(range(rs, re))
        p0, r0 = pe, re
    gp.append(pred_seq[p0:] + "-" * (len(ref_seq) - r0))
    gr.append("-" * (len(pred_seq) - p0) + ref_seq[r0:])
    return np.asarray(pi, int), np.asarray(ri, int), ("".join(gp), "".join(gr))


def ca_rmsd(ref: np.ndarray, pred: np.ndarray) -> float:
    from Bio.SVDSuperimposer import SVDSuperimposer

    sup = SVDSuperimposer()
    sup.set(np.asarray(ref, np.float64), np.asarray(pred, np.float64))
    sup.run()
    return float(sup.get_rms())


def _kabsch(ref: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rotation, translation) with pred @ rotation + translation ~ ref (least squares, proper
    rotation). The GDT search runs thousands of these: numpy's 3x3 SVD, not an object per call."""
    rot, t = kabsch(ref, pred)  # pred @ rot.T + t
    return rot.T, t


def gdt(ref: np.ndarray, pred: np.ndarray, cutoffs=GDT_THRESHOLDS, iterations: int = 20) -> dict[float, float]:
    """Per cutoff, the largest fraction of residues within it under one superposition."""
    ref, pred = np.asarray(ref, np.float64), np.asarray(pred, np.float64)
    n = len(ref)
    best = {c: 0.0 for c in cutoffs}
    if n < 3:
        return {c: float(np.mean(np.linalg.norm(ref - pred, axis=1) <= c)) for c in cutoffs}
    seeds = []
    length = n
    while length >= 4 or not seeds:
        step = max(1, length // 2)
        seeds += [np.arange(s, s + length) for s in range(0, n - length + 1, step)]
        if length == 4:
            break
        length = max(4, length // 2)
    for seed in seeds:
        for c in cutoffs:
            if best[c] == 1.0:
                continue
            chosen = seed
            for _ in range(iterations):
                rot, tran = _kabsch(ref[chosen], pred[chosen])
                d = np.linalg.norm(pred @ rot + tran - ref, axis=1)
                within = np.flatnonzero(d <= c)
                best[c] = max(best[c], len(within) / n)
                if len(within) < 3 or np.array_equal(within, chosen):
                    break
                chosen = within
    return best


def gdt_ts(ref, pred) -> float:
    """GDT-TS in [0, 100]."""
    return float(100.0 * np.mean(list(gdt(ref, pred).values())))


def tm_score(pred_ca, ref_ca, pred_seq: str, ref_seq: str, alignment: tuple[str, str]) -> float:
    """TM-score normalised by the reference, held to `alignment` (gapped prediction, reference)."""
    tmtools = require("tmtools", "openfold", "for TM-score")
    res = tmtools.tm_align(np.ascontiguousarray(pred_ca, np.float64), np.ascontiguousarray(ref_ca, np.float64),
                           _clean(pred_seq), _clean(ref_seq), alignment=[_clean_gapped(alignment[0]),
                                                                         _clean_gapped(alignment[1])])
    return float(res.tm_norm_chain2)


def _clean_gapped(s: str) -> str:
    return "".join(c if c == "-" else _clean(c) for c in s)


def compare(pred, ref) -> dict:
    """All scores of a predicted chain against a reference chain (structures.Chain)."""
    pi, ri, gapped = matched(pred.sequence, ref.sequence)
    if len(pi) < 3:
        return {"aligned": int(len(pi)), "coverage": len(pi) / max(len(ref.sequence), 1), "identity": 0.0,
                "ca_rmsd": float("nan"), "gdt_ts": float("nan"), "lddt_ca": float("nan"), "tm_score": float("nan")}
    p, r = pred.ca[pi], ref.ca[ri]
    identity = float(np.mean([a == b for a, b in zip(np.array(list(pred.sequence))[pi], np.array(list(ref.sequence))[ri])]))
    return {"ca_rmsd": ca_rmsd(r, p), "gdt_ts": gdt_ts(r, p), "lddt_ca": float(lddt_ca(r, p)),
            "tm_score": tm_score(pred.ca, ref.ca, pred.sequence, ref.sequence, gapped),
            "aligned": int(len(pi)), "coverage": float(len(ri) / len(ref.sequence)), "identity": identity}
