"""Protein chains for scoring: read from PDB/mmCIF with Biopython, or taken from a prediction.

A chain keeps the residues that have a C-alpha (a C-alpha-only reference is enough), their
one-letter sequence (modified residues such as MSE through Biopython's extended table), the
B-factor of each C-alpha (pLDDT in AlphaFold/OpenFold files) and the heavy atoms for the
clash check.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xopt.errors import UserError
from xopt.extras import require

STRUCTURE_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif")


@dataclass
class Chain:
    name: str
    sequence: str
    ca: np.ndarray  # [N, 3] Angstrom
    resnum: np.ndarray  # [N] residue numbers (chain breaks show as gaps)
    bfactor: np.ndarray  # [N] C-alpha B-factors (pLDDT in predictions)
    atoms: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # heavy atoms [M, 3]
    atom_res: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  # [M] index into the residues
    atom_names: list = field(default_factory=list)  # [M]


def _parser(path: Path):
    require("Bio", "openfold", "to read PDB/mmCIF structures")
    from Bio.PDB import MMCIFParser, PDBParser

    return MMCIFParser(QUIET=True) if path.suffix.lower() in (".cif", ".mmcif") else PDBParser(QUIET=True)


def read_chains(path) -> list[Chain]:
    """Every protein chain of the first model in a PDB/mmCIF file; an unreadable file is named."""
    from Bio.Data.PDBData import protein_letters_3to1_extended as three_to_one

    path = Path(path)
    if not path.is_file():
        raise UserError(f"no structure file at {path}", "check the path")
    try:
        structure = _parser(path).get_structure(path.stem, str(path))
    except Exception as exc:  # Biopython raises ValueError, KeyError, IndexError... on damaged files
        raise UserError(f"cannot read {path} as {'mmCIF' if path.suffix.lower() in ('.cif', '.mmcif') else 'PDB'} "
                        f"({type(exc).__name__}: {str(exc)[:160]})", "pass a valid PDB or mmCIF file") from exc
    models = list(structure)
    chains = []
    for ch in models[0] if models else ():
        seq, ca, num, bf, atoms, atom_res, names = [], [], [], [], [], [], []
        for res in ch:
            hetflag, number, _ = res.id
            letter = three_to_one.get(res.get_resname().strip().upper())
            if letter is None or "CA" not in res or hetflag == "W":
                continue  # water, ligands and residues without a C-alpha
            i = len(seq)
            seq.append(letter)
            ca.append(res["CA"].coord)
            num.append(number)
            bf.append(res["CA"].bfactor)
            for atom in res:
                if atom.element != "H" and not atom.get_id().startswith("H"):
                    atoms.append(atom.coord)
                    atom_res.append(i)
                    names.append(atom.get_id())
        if seq:
            chains.append(Chain(ch.id, "".join(seq), np.asarray(ca, np.float64), np.asarray(num),
                                np.asarray(bf, np.float64), np.asarray(atoms, np.float64), np.asarray(atom_res),
                                names))
    if not chains:
        raise UserError(f"{path} holds no protein residues with a C-alpha atom", "pass a protein structure file")
    return chains


# AlphaFold's atom37 layout and residue order (openfold.np.residue_constants.atom_types/restypes):
# spelled out so a prediction is read without importing OpenFold.
ATOM37 = ("N", "CA", "C", "CB", "O", "CG", "CG1", "CG2", "OG", "OG1", "SG", "CD", "CD1", "CD2", "ND1", "ND2", "OD1",
          "OD2", "SD", "CE", "CE1", "CE2", "CE3", "NE", "NE1", "NE2", "OE1", "OE2", "CH2", "NH1", "NH2", "OH", "CZ",
          "CZ2", "CZ3", "NZ", "OXT")
RESTYPES = "ARNDCQEGHILKMFPSTWYVX"


def from_prediction(result: dict, name: str = "prediction") -> Chain:
    """A chain from an OpenFold result (atom37 positions and mask, pLDDT per residue)."""
    pos = np.asarray(result["final_atom_positions"], np.float64)
    mask = np.asarray(result["final_atom_mask"]) > 0
    ca = ATOM37.index("CA")
    seq = result.get("sequence") or "".join(RESTYPES[min(int(a), 20)] for a in result["aatype"])
    keep = mask[:, ca]
    index = np.cumsum(keep) - 1
    res_i, atom_i = np.nonzero(mask & keep[:, None])
    return Chain(name, "".join(s for s, k in zip(seq, keep) if k), pos[keep, ca],
                 np.asarray(result.get("residue_index", np.arange(len(pos))))[keep],
                 np.asarray(result["plddt"], np.float64)[keep], pos[res_i, atom_i], index[res_i],
                 [ATOM37[a] for a in atom_i])


def best_chain(chains: list[Chain], sequence: str, wanted: str | None = None, where: str = "") -> Chain:
    """The chain named `wanted`, or the one whose sequence aligns best to `sequence`."""
    if wanted:
        found = [c for c in chains if c.name == wanted]
        if not found:
            raise UserError(f"{where} has no chain {wanted!r} (chains: {', '.join(c.name for c in chains)})",
                            "pass --chain with one of those ids")
        return found[0]
    if len(chains) == 1:
        return chains[0]
    from xopt.models.openfold.groundtruth import align

    return max(chains, key=lambda c: align(sequence, c.sequence).score)
