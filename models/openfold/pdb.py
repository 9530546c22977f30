"""PDB text for a prediction (atom37 positions and mask, pLDDT per residue), written with
Biopython's structure builder and PDBIO: no torch, no OpenFold.

AlphaFold's atom37 order and residue names (the test checks them against OpenFold's
residue_constants); pLDDT (0-100) goes in every atom's B-factor column, as AlphaFold writes it.
"""
from __future__ import annotations

import io

import numpy as np

from xopt.extras import require

ATOM37 = ("N", "CA", "C", "CB", "O", "CG", "CG1", "CG2", "OG", "OG1", "SG", "CD", "CD1", "CD2", "ND1", "ND2",
          "OD1", "OD2", "SD", "CE", "CE1", "CE2", "CE3", "NE", "NE1", "NE2", "OE1", "OE2", "CH2", "NH1", "NH2",
          "OH", "CZ", "CZ2", "CZ3", "NZ", "OXT")
CA_INDEX, CB_INDEX = ATOM37.index("CA"), ATOM37.index("CB")


def residue_names(aatype: np.ndarray) -> list[str]:
    from Bio.Data.IUPACData import protein_letters_1to3

    from xopt.models.openfold.features import RESTYPES

    return [protein_letters_1to3[RESTYPES[a]].upper() if a < len(RESTYPES) else "UNK" for a in np.asarray(aatype)]


def to_pdb(result: dict, chain: str = "A", remark: str = "") -> str:
    """`result`: final_atom_positions [N, 37, 3], final_atom_mask [N, 37], plddt [N], aatype [N],
    residue_index [N] (0-based; written 1-based)."""
    require("Bio", "openfold", "to write PDB files")
    from Bio.PDB import PDBIO
    from Bio.PDB.StructureBuilder import StructureBuilder

    pos = np.asarray(result["final_atom_positions"], np.float32)
    mask = np.asarray(result["final_atom_mask"]) > 0.5
    plddt = np.clip(np.asarray(result["plddt"], np.float64), 0.0, 100.0)
    index = np.asarray(result.get("residue_index", np.arange(len(pos))), np.int64)
    sb = StructureBuilder()
    sb.init_structure("prediction")
    sb.init_model(0)
    sb.init_chain(chain)
    sb.init_seg("    ")
    serial = 1
    for i, name in enumerate(residue_names(result["aatype"])):
        sb.init_residue(name, " ", int(index[i]) + 1, " ")
        for a in np.nonzero(mask[i])[0]:
            atom = ATOM37[a]
            sb.init_atom(atom, pos[i, a], round(float(plddt[i]), 2), 1.0, " ", f" {atom:<3}" if len(atom) < 4 else atom,
                         serial_number=serial, element=atom[0])
            serial += 1
    out = io.StringIO()
    pdbio = PDBIO()
    pdbio.set_structure(sb.get_structure())
    pdbio.save(out)
    text = out.getvalue()
    if remark:
        text = "".join(f"REMARK 250 {line}\n" for line in remark.splitlines()) + text
    return text
