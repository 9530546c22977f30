"""OpenFold previews (the spec's `previews` hook): both trunks' outputs folded by the same
structure module and pLDDT head, then per input the pLDDT per residue (FP32 and variant), the
C-alpha distance maps and their difference, and the two structures as PDB files (pLDDT in the
B-factor column) that report.html shows in a 3D viewer, the variant superposed on FP32."""
from __future__ import annotations

import numpy as np

from xopt.previews import heatmap, series, structure

BACKBONE14 = {"N": 0, "CA": 1, "C": 2, "O": 3}  # atom14 slots shared by every residue type


def _fold(model, out: dict, aatype: np.ndarray, n: int) -> dict:
    """atom14 positions [n, 14, 3] and pLDDT [n] from trunk outputs (s, z_out)."""
    import torch
    from openfold.utils.loss import compute_plddt

    s = torch.as_tensor(np.asarray(out["s"], np.float32)[:n])
    z = torch.as_tensor(np.asarray(out["z_out"], np.float32)[:n, :n])
    with torch.no_grad():
        sm = model.structure_module({"single": s, "pair": z}, torch.as_tensor(np.asarray(aatype[:n], np.int64)),
                                    mask=s.new_ones(s.shape[:-1]), inplace_safe=False)
        plddt = compute_plddt(model.aux_heads.plddt(sm["single"]))
    return {"atom14": sm["positions"][-1].float().numpy().astype(np.float64), "plddt": plddt.float().numpy()}


def _pdb(atom14: np.ndarray, plddt: np.ndarray, aatype: np.ndarray, remark: str) -> str:
    from xopt.models.openfold.pdb import ATOM37, to_pdb

    n = len(atom14)
    pos37, mask37 = np.zeros((n, len(ATOM37), 3), np.float32), np.zeros((n, len(ATOM37)), np.float32)
    for atom, slot in BACKBONE14.items():
        pos37[:, ATOM37.index(atom)] = atom14[:, slot]
        mask37[:, ATOM37.index(atom)] = 1.0
    return to_pdb({"final_atom_positions": pos37, "final_atom_mask": mask37, "plddt": plddt,
                   "aatype": aatype[:n]}, remark=remark)


def _distances(ca: np.ndarray) -> np.ndarray:
    return np.linalg.norm(ca[:, None, :] - ca[None, :, :], axis=-1)


def previews(feeds, fp32_outputs, variant_outputs, out_dir) -> list[dict]:
    from xopt.models.openfold.inputs import _MODELS, context_of
    from xopt.models.openfold.metrics import ca_rmsd, kabsch

    recs = []
    for i, (feed, ref, out) in enumerate(zip(feeds, fp32_outputs, variant_outputs)):
        ctx = context_of(feed)
        if ctx is None or ctx["model_key"] not in _MODELS:
            raise RuntimeError("this feed was not made by the openfold spec in this process (no sequence or "
                               "structure module to fold it with)")
        model, n, aa = _MODELS[ctx["model_key"]][0], ctx["n_real"], ctx["aatype"]
        a, b = _fold(model, ref, aa, n), _fold(model, out, aa, n)
        rot, t = kabsch(a["atom14"][:, 1], b["atom14"][:, 1])
        b_moved = b["atom14"] @ rot.T + t  # the variant in the FP32 frame, so the 3D views overlay
        rmsd = ca_rmsd(a["atom14"][:, 1], b["atom14"][:, 1])
        d_ref, d_var = _distances(a["atom14"][:, 1]), _distances(b_moved[:, 1])
        diff = np.abs(d_var - d_ref)
        msa_rows = int(np.asarray(feed["msa_mask"]).sum(axis=1).astype(bool).sum())
        meta = {"input": i, "input_label": f"random sequence of {n} residues with {msa_rows} MSA rows "
                                           "(seeded-random weights: not a real fold)"}
        dmax = float(d_ref.max(initial=1.0))
        recs += [series(out_dir, f"{i}-plddt.csv", np.arange(1, n + 1), {"FP32": a["plddt"], "variant": b["plddt"]},
                        "variant", "pLDDT per residue", "residue", "pLDDT (0–100)", better="higher",
                        group="pLDDT per residue", caption=f"mean |ΔpLDDT| {np.abs(a['plddt'] - b['plddt']).mean():.3g}",
                        **meta),
                 heatmap(out_dir, f"{i}-fp32-distances.png", d_ref, "reference", "FP32 Cα distance map", lo=0.0,
                         hi=dmax, unit=" Å", group="Cα distances", caption="residue i (rows) to j (columns)", **meta),
                 heatmap(out_dir, f"{i}-distances.png", d_var, "variant", "variant Cα distance map", lo=0.0, hi=dmax,
                         unit=" Å", group="Cα distances", **meta),
                 heatmap(out_dir, f"{i}-distance-difference.png", diff, "difference", "|variant − FP32| distances",
                         lo=0.0, hi=max(float(diff.max(initial=0.0)), 0.1), unit=" Å", scale="Inferno", reduce="max",
                         gamma=0.5,
                         group="Cα distances",
                         caption=f"max {diff.max(initial=0.0):.3g} Å; Cα RMSD {rmsd:.3g} Å (square-root colour scale)",
                         **meta)]
        ref_name = f"{i}-fp32.pdb"
        recs.append(structure(out_dir, ref_name, _pdb(a["atom14"], a["plddt"], aa, "FP32 reference (xopt preview)"),
                              "reference", "FP32 structure", group="3D structure",
                              caption="backbone trace coloured by pLDDT: ≥90 dark blue, ≥70 light blue, ≥50 yellow, "
                                      "<50 orange", **meta))
        recs.append(structure(out_dir, f"{i}-variant.pdb", _pdb(b_moved, b["plddt"], aa, "variant (xopt preview)"),
                              "variant", "variant structure on FP32 (grey)", group="3D structure", overlay=ref_name,
                              caption=f"superposed on FP32 by Cα (RMSD {rmsd:.3g} Å); coloured by pLDDT", **meta))
    return recs
