"""Label-free checks on a predicted structure: they flag a broken pipeline without a reference.

- pLDDT: the model's own confidence (0-100). A trained AlphaFold2 is mostly above 70 on a
  folded domain; a mean below 50 says the model did not recognise the input (wrong or
  missing alignment features, a residue mapping off by one, untrained weights).
- consecutive C-alpha distances: 3.80 Angstrom for trans peptides (2.9 for the rare cis);
  a broken backbone (coordinates in nm, a wrong atom order) shows here first.
- steric clashes: heavy atoms of different residues closer than their van der Waals radii
  minus 1.5 Angstrom (AlphaFold2's structural-violation criterion; the peptide bond and
  disulfides excluded), or, for a C-alpha-only model, C-alphas two or more apart under 3 Angstrom.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

PLDDT_MEAN_MIN = 50.0
CA_CA = (3.6, 4.0)  # Angstrom: trans peptide 3.80 +- 0.05, with room for refinement noise
CA_CA_OUTLIERS_MAX = 0.05  # cis peptides and chain breaks
CLASH_TOLERANCE = 1.5
VDW = {"C": 1.7, "N": 1.55, "O": 1.52, "S": 1.8}  # Bondi radii (AlphaFold2's table)
CLASHES_PER_100_MAX = 1.0


def _check(name, value, unit, expected, ok, message, info) -> dict:
    if not ok and (info or {}).get("weights", {}).get("kind") == "seeded-random":
        message += " (expected with seeded-random weights)"
    v = None if value is None or not np.isfinite(value) else round(float(value), 3)
    return {"name": name, "value": v, "unit": unit, "expected": expected, "ok": bool(ok), "message": "" if ok else message}


def plddt_stats(plddt: np.ndarray) -> dict:
    p = np.asarray(plddt, np.float64)
    return {"mean": float(p.mean()), "below_50": float(np.mean(p < 50)), "below_70": float(np.mean(p < 70)),
            "above_90": float(np.mean(p > 90))}


def consecutive_ca(chain) -> np.ndarray:
    """C-alpha distances of residues numbered consecutively (a numbering gap is a chain break)."""
    if len(chain.ca) < 2:
        return np.zeros(0)
    step = np.diff(np.asarray(chain.resnum))
    d = np.linalg.norm(np.diff(chain.ca, axis=0), axis=1)
    return d[step == 1]


def clashes(chain) -> tuple[int, str]:
    """(number of clashing pairs, what was compared)."""
    from scipy.spatial import cKDTree

    if len(chain.atom_names) == 0 or len(chain.atoms) == len(chain.ca):  # C-alpha only
        tree = cKDTree(chain.ca)
        pairs = tree.query_pairs(3.0, output_type="ndarray")
        return int(np.sum(np.abs(pairs[:, 0] - pairs[:, 1]) >= 2)) if len(pairs) else 0, "C-alpha"
    names = np.asarray(chain.atom_names)
    elem = np.array([n[0] for n in names])
    radius = np.array([VDW.get(e, 1.7) for e in elem])
    tree = cKDTree(chain.atoms)
    pairs = tree.query_pairs(2 * max(VDW.values()) - CLASH_TOLERANCE, output_type="ndarray")
    if not len(pairs):
        return 0, "heavy-atom"
    i, j = pairs[:, 0], pairs[:, 1]
    ri, rj = chain.atom_res[i], chain.atom_res[j]
    d = np.linalg.norm(chain.atoms[i] - chain.atoms[j], axis=1)
    bad = (ri != rj) & (d < radius[i] + radius[j] - CLASH_TOLERANCE)
    lo, hi = np.where(ri < rj, i, j), np.where(ri < rj, j, i)
    peptide = (np.abs(ri - rj) == 1) & (names[lo] == "C") & (names[hi] == "N")
    disulfide = (names[i] == "SG") & (names[j] == "SG")
    return int(np.sum(bad & ~peptide & ~disulfide)), "heavy-atom"


def chain_checks(chain, info: Mapping[str, Any] | None = None, plddt: bool = True) -> list[dict]:
    out = []
    if plddt and len(chain.bfactor):
        p = np.asarray(chain.bfactor, np.float64)
        s = plddt_stats(p)
        out.append(_check("pLDDT mean", s["mean"], "", f"at least {PLDDT_MEAN_MIN:g} (0-100)",
                          s["mean"] >= PLDDT_MEAN_MIN,
                          f"mean pLDDT is {s['mean']:.1f} ({100 * s['below_50']:.0f} % of residues below 50): the "
                          "model is not confident; a missing or wrong MSA, a misread sequence, or untrained weights",
                          info))
        out[-1]["distribution"] = {k: round(v, 4) for k, v in s.items()}
    d = consecutive_ca(chain)
    if len(d):
        share = float(np.mean((d < CA_CA[0]) | (d > CA_CA[1])))
        out.append(_check("consecutive C-alpha distance", float(d.mean()), "Angstrom (mean)",
                          f"{CA_CA[0]}-{CA_CA[1]} A for at least {100 * (1 - CA_CA_OUTLIERS_MAX):.0f} % of pairs",
                          share <= CA_CA_OUTLIERS_MAX,
                          f"{100 * share:.0f} % of consecutive C-alpha distances are outside {CA_CA[0]}-{CA_CA[1]} A "
                          f"(mean {d.mean():.2f} A): the backbone is broken (coordinates not in Angstrom, atoms out "
                          "of order) or the weights are untrained", info))
    n, kind = clashes(chain)
    per100 = 100.0 * n / max(len(chain.ca), 1)
    out.append(_check("steric clashes", per100, f"{kind} clashes per 100 residues",
                      f"at most {CLASHES_PER_100_MAX:g}", per100 <= CLASHES_PER_100_MAX,
                      f"{n} {kind} clashes ({per100:.1f} per 100 residues): atoms overlap; the structure module saw "
                      "corrupted inputs or the weights are untrained", info))
    out[-1]["count"] = n
    return out


def checks(raw, output: Mapping[str, Any], info: Mapping[str, Any] | None = None) -> list[dict]:
    """`raw`: the query the pipeline folded; `output`: its result dict (atom37 positions, pLDDT)."""
    from xopt.models.openfold.structures import from_prediction

    return chain_checks(from_prediction(output, getattr(raw, "name", "prediction")), info)


def plddt_from_bfactors(chain, notes: list | None = None):
    """B-factors read as pLDDT: AlphaFold/OpenFold write 0-100; some tools write 0-1."""
    b = np.asarray(chain.bfactor, np.float64)
    if len(b) and b.max() <= 1.0 and b.min() >= 0.0 and b.max() > 0:
        chain.bfactor = b * 100.0
        if notes is not None:
            notes.append(f"{chain.name}: B-factors on 0-1 read as pLDDT x 100")
    return chain


def run_checks(src: Path, written: list[Path], info: Mapping[str, Any] | None = None) -> list[dict]:
    """The checks on the PDB `xopt run openfold` wrote (pLDDT in its B-factor column)."""
    from xopt.models.openfold.structures import read_chains

    out = []
    for path in written:
        for chain in read_chains(path):
            out += chain_checks(plddt_from_bfactors(chain), info)
    return out
