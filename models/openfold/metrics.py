"""Structure-level drift between two predictions of the same sequence (numpy only).

All functions take C-alpha coordinates [N, 3] in Angstrom, an optional residue mask [N],
and treat `ref` as the reference. They are symmetric where the metric is (RMSD).
"""
from __future__ import annotations

import numpy as np

LDDT_CUTOFF = 15.0  # Angstrom: pairs closer than this in the reference are scored
LDDT_THRESHOLDS = (0.5, 1.0, 2.0, 4.0)
GDT_THRESHOLDS = (1.0, 2.0, 4.0, 8.0)


def _masked(ref, pred, mask):
    ref = np.asarray(ref, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    if ref.shape != pred.shape or ref.ndim != 2 or ref.shape[1] != 3:
        raise ValueError(f"coordinates must be matching [N, 3] arrays, got {ref.shape} and {pred.shape}")
    if mask is None:
        mask = np.ones(len(ref), dtype=bool)
    mask = np.asarray(mask).astype(bool)
    return ref[mask], pred[mask]


def kabsch(ref: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation R and translation t minimising |(pred @ R.T + t) - ref| (proper rotation)."""
    ref_c, pred_c = ref.mean(axis=0), pred.mean(axis=0)
    h = (pred - pred_c).T @ (ref - ref_c)
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(vt.T @ u.T)) or 1.0  # forbid reflections
    rot = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return rot, ref_c - pred_c @ rot.T


def superpose(ref, pred, mask=None) -> np.ndarray:
    """`pred` moved onto `ref` by the optimal rigid motion over the masked residues."""
    r, p = _masked(ref, pred, mask)
    rot, t = kabsch(r, p)
    return np.asarray(pred, dtype=np.float64) @ rot.T + t


def ca_rmsd(ref, pred, mask=None) -> float:
    """C-alpha RMSD after optimal superposition (Kabsch)."""
    r, p = _masked(ref, pred, mask)
    if len(r) == 0:
        return float("nan")
    rot, t = kabsch(r, p)
    return float(np.sqrt(np.mean(np.sum((p @ rot.T + t - r) ** 2, axis=1))))


def lddt_ca(ref, pred, mask=None, cutoff: float = LDDT_CUTOFF) -> float:
    """Global lDDT-Ca of `pred` against `ref` in [0, 1] (superposition-free): the fraction of
    reference pairs within `cutoff` whose distance is preserved within 0.5/1/2/4 A."""
    r, p = _masked(ref, pred, mask)
    n = len(r)
    if n < 2:
        return float("nan")
    d_ref = np.linalg.norm(r[:, None] - r[None], axis=-1)
    d_pred = np.linalg.norm(p[:, None] - p[None], axis=-1)
    scored = (d_ref < cutoff) & ~np.eye(n, dtype=bool)
    if not scored.any():
        return float("nan")
    err = np.abs(d_ref - d_pred)[scored]
    return float(np.mean([np.mean(err < t) for t in LDDT_THRESHOLDS]))


def gdt_ts(ref, pred, mask=None) -> float:
    """GDT-TS in [0, 100]: mean over 1/2/4/8 A of the fraction of residues within that
    distance after superposition. Uses the global Kabsch superposition plus, per threshold,
    a re-superposition on the residues already within it (a cheap stand-in for LGA's search,
    never below the single-superposition value)."""
    r, p = _masked(ref, pred, mask)
    n = len(r)
    if n == 0:
        return float("nan")
    rot, t = kabsch(r, p)
    base = np.linalg.norm(p @ rot.T + t - r, axis=1)
    scores = []
    for thr in GDT_THRESHOLDS:
        best = np.mean(base <= thr)
        close = base <= thr
        for _ in range(3):
            if close.sum() < 3:
                break
            rot_c, t_c = kabsch(r[close], p[close])
            dist = np.linalg.norm(p @ rot_c.T + t_c - r, axis=1)
            best = max(best, np.mean(dist <= thr))
            new = dist <= thr
            if np.array_equal(new, close):
                break
            close = new
        scores.append(best)
    return float(100.0 * np.mean(scores))


def structure_drift(ref_ca, pred_ca, ref_plddt=None, pred_plddt=None, mask=None) -> dict:
    """The structure terms xopt reports for OpenFold variants."""
    out = {"ca_rmsd": ca_rmsd(ref_ca, pred_ca, mask), "lddt_ca": lddt_ca(ref_ca, pred_ca, mask),
           "gdt_ts": gdt_ts(ref_ca, pred_ca, mask)}
    if ref_plddt is not None and pred_plddt is not None:
        m = np.ones(len(ref_plddt), bool) if mask is None else np.asarray(mask).astype(bool)
        diff = np.abs(np.asarray(ref_plddt, np.float64)[m] - np.asarray(pred_plddt, np.float64)[m])
        out["plddt_mean_abs_diff"] = float(diff.mean()) if diff.size else float("nan")
        out["plddt_max_abs_diff"] = float(diff.max()) if diff.size else float("nan")
    return out
