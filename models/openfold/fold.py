"""AlphaFold2 inference in PyTorch with the Evoformer trunk behind any callable (the torch
backend's path; the ONNX path is hostfold.py).

This follows OpenFold's `AlphaFold.iteration`/`forward` for the no-template presets: input
and recycling embedders, extra-MSA stack, trunk, structure module, auxiliary heads, with
recycling driven here on the host. Only the trunk call is pluggable; everything else is
OpenFold's own modules.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

Trunk = Callable  # (m [S,N,c_m], z [N,N,c_z], msa_mask [S,N], pair_mask [N,N]) -> (m, z, s), torch tensors


def session_trunk(session) -> Trunk:
    """A trunk callable over an xopt Session (ONNX Runtime, TensorRT, ...): FP32 numpy I/O."""
    import torch

    def run(m, z, msa_mask, pair_mask):
        out = session.run({"m": m.float().numpy(), "z": z.float().numpy(),
                           "msa_mask": msa_mask.float().numpy(), "pair_mask": pair_mask.float().numpy()})
        return tuple(torch.from_numpy(np.ascontiguousarray(out[k])) for k in ("m_out", "z_out", "s"))

    return run


def torch_batch(batch: dict) -> dict:
    """A numpy feature batch (features.make_batch) as OpenFold's model takes it: torch tensors,
    plus the atom14/atom37 index maps OpenFold derives from aatype."""
    import torch

    from openfold.data.data_transforms import make_atom14_masks

    out = {k: torch.as_tensor(np.asarray(v)) for k, v in batch.items()}
    if "atom37_atom_exists" not in out:
        cycles = out["aatype"].shape[-1]
        masks = make_atom14_masks({"aatype": out["aatype"][..., 0]})
        for k in ("residx_atom37_to_atom14", "atom37_atom_exists", "residx_atom14_to_atom37", "atom14_atom_exists"):
            out[k] = torch.stack([masks[k]] * cycles, dim=-1)
    return out


class Folder:
    def __init__(self, model, of_cfg, trunk: Trunk | None = None, inplace_safe: bool = True):
        import torch

        from xopt.models.openfold.trunk import make_trunk

        self.model = model
        self.cfg = of_cfg
        self.inplace_safe = inplace_safe
        self.trunk = trunk or make_trunk(model.evoformer, {"chunk_size": of_cfg.globals.chunk_size,
                                                           "lma": of_cfg.globals.use_lma}, inplace_safe=inplace_safe)
        # On CPU OpenFold's memory-efficient attention kernel is a stub: the extra-MSA stack
        # uses LMA there (GPU keeps OpenFold's own choice).
        self.extra_msa_lma = bool(of_cfg.globals.use_lma) or not torch.cuda.is_available()

    def _embed(self, feats, prevs):
        import torch

        from openfold.utils.feats import build_extra_msa_feat, pseudo_beta_fn

        model, inplace = self.model, self.inplace_safe
        n = feats["target_feat"].shape[-2]
        seq_mask = feats["seq_mask"]
        pair_mask = seq_mask[..., None] * seq_mask[..., None, :]
        msa_mask = feats["msa_mask"]
        m, z = model.input_embedder(feats["target_feat"], feats["residue_index"], feats["msa_feat"],
                                    inplace_safe=inplace)
        m_prev, z_prev, x_prev = prevs
        if m_prev is None:
            m_prev = m.new_zeros((n, model.config.input_embedder.c_m))
            z_prev = z.new_zeros((n, n, model.config.input_embedder.c_z))
            x_prev = z.new_zeros((n, 37, 3))
        x_prev = pseudo_beta_fn(feats["aatype"], x_prev, None).to(dtype=z.dtype)
        m_emb, z_emb = model.recycling_embedder(m_prev, z_prev, x_prev, inplace_safe=inplace)
        m[..., 0, :, :] += m_emb
        z = z + z_emb
        del m_emb, z_emb, m_prev, z_prev, x_prev
        if model.config.extra_msa.enabled:
            a = model.extra_msa_embedder(build_extra_msa_feat(feats))
            z = model.extra_msa_stack(a, z, msa_mask=feats["extra_msa_mask"].to(dtype=m.dtype),
                                      chunk_size=self.cfg.globals.chunk_size, use_lma=self.extra_msa_lma,
                                      pair_mask=pair_mask.to(dtype=m.dtype), inplace_safe=inplace,
                                      _mask_trans=model.config._mask_trans)
        return m, z, msa_mask.to(dtype=m.dtype), pair_mask.to(dtype=z.dtype)

    def _structure(self, feats, m, z, s):
        from openfold.utils.feats import atom14_to_atom37

        out = {"msa": m, "pair": z, "single": s}
        out["sm"] = self.model.structure_module(out, feats["aatype"], mask=feats["seq_mask"].to(dtype=s.dtype),
                                                inplace_safe=self.inplace_safe)
        out["final_atom_positions"] = atom14_to_atom37(out["sm"]["positions"][-1], feats)
        out["final_atom_mask"] = feats["atom37_atom_exists"]
        return out

    def __call__(self, batch: dict, keep_pair: bool = False) -> dict:
        """`batch`: OpenFold features with a trailing recycling dimension. Returns numpy results:
        final_atom_positions [N,37,3], final_atom_mask, plddt [N] (0-100), ptm, single, (pair)."""
        import torch

        from xopt.models.openfold.cpu import quiet

        batch = torch_batch(batch)
        cycles = batch["aatype"].shape[-1]
        prevs = (None, None, None)
        with torch.no_grad(), quiet():
            for c in range(cycles):
                feats = {k: v[..., c] for k, v in batch.items()}
                m, z, msa_mask, pair_mask = self._embed(feats, prevs)
                m, z, s = self.trunk(m, z, msa_mask, pair_mask)
                out = self._structure(feats, m, z, s)
                prevs = (m[..., 0, :, :], z, out["final_atom_positions"])
            out.update(self.model.aux_heads(out))
        res = {"final_atom_positions": out["final_atom_positions"].float().numpy(),
               "final_atom_mask": out["final_atom_mask"].float().numpy(),
               "plddt": out["plddt"].float().numpy(), "single": out["single"].float().numpy(),
               "aatype": feats["aatype"].numpy(), "residue_index": feats["residue_index"].numpy()}
        if "predicted_tm_score" in out:
            res["ptm"] = float(out["predicted_tm_score"])
        if keep_pair:
            res["pair"] = out["pair"].float().numpy()
        return res


def structure_from_trunk(model, s, z, aatype) -> dict:
    """C-alpha positions and pLDDT from trunk outputs alone (structure module + pLDDT head),
    for drift measured on the exported graph's outputs."""
    import torch

    from openfold.utils.loss import compute_plddt

    s_t = torch.as_tensor(np.asarray(s, np.float32))
    z_t = torch.as_tensor(np.asarray(z, np.float32))
    aa = torch.as_tensor(np.asarray(aatype, np.int64))
    with torch.no_grad():
        sm = model.structure_module({"single": s_t, "pair": z_t}, aa, mask=s_t.new_ones(s_t.shape[:-1]),
                                    inplace_safe=False)
        plddt = compute_plddt(model.aux_heads.plddt(sm["single"]))
    ca = sm["positions"][-1][..., 1, :]  # atom14 slot 1 is C-alpha for every residue type
    return {"ca": ca.float().numpy(), "plddt": plddt.float().numpy()}
