"""The parts of AlphaFold2 around the trunk as ONNX-exportable modules with plain tensor I/O.

Embedders (per recycling iteration), the structure module cut at its layer boundary with the
invariant point attention over chunks of query rows, and the heads. Each calls OpenFold's own
sub-modules with their parameters; what is ours is where the cuts are:

    embed_msa      target_feat, msa_feat rows             -> m rows
    embed_pair     rows i of the features, z_prev rows    -> z rows (relpos + target + recycling)
    embed_m_prev   m_prev (first MSA row of the last pass) -> its layer norm, added to m[0]
    embed_extra    extra-MSA feature rows                  -> extra-MSA activations
    single         m[0]                                    -> s (the trunk's single representation)
    sm_pair        z rows                                  -> layer-normed z rows, IPA pair bias rows
    sm_init        s                                       -> s_initial, s
    ipa_rows       s, frames, query rows                   -> IPA update of those rows
    sm_update      s, IPA update, frames                   -> s, frames of the next layer
    sm_final       s, s_initial, frames, aatype            -> atom37 positions and mask, pseudo-beta, pLDDT
    ptm_rows       z rows, residue mask                    -> per-alignment TM terms of those rows

The IPA computes point distances term by term (3 x points [H, K, N] tensors instead of one
[K, N, H, points, 3]) and weights value points with one matmul per point, so its largest
tensor is [H, K, N]; the result equals OpenFold's up to summation order. Frames travel as
OpenFold's tensor_7 (unit quaternion, translation).
"""
from __future__ import annotations

import functools
import math


@functools.lru_cache(maxsize=None)
def _classes():
    import torch
    import torch.nn.functional as F

    from openfold.utils.feats import pseudo_beta_fn
    from openfold.utils.loss import compute_plddt
    from openfold.utils.rigid_utils import Rigid, Rotation

    def rigid_of(t):
        return Rigid.from_tensor_7(t)

    def tensor7(r):
        return torch.cat([r.get_rots().get_quats(), r.get_trans()], dim=-1)

    class EmbedMsa(torch.nn.Module):
        def __init__(self, emb):
            super().__init__()
            self.emb = emb

        def forward(self, tf, msa_feat):
            return self.emb.linear_msa_m(msa_feat) + self.emb.linear_tf_m(tf)[None]

    class EmbedPair(torch.nn.Module):
        def __init__(self, emb, rec):
            super().__init__()
            self.emb, self.rec = emb, rec

        def forward(self, tf_rows, ri_rows, tf, ri, z_prev_rows, x_rows, x):
            e = self.emb
            d = ri_rows.float()[:, None] - ri.float()[None, :]
            bins = torch.arange(-e.relpos_k, e.relpos_k + 1, device=d.device, dtype=d.dtype)
            onehot = F.one_hot(torch.argmin(torch.abs(d[..., None] - bins), dim=-1), e.no_bins).float()
            z = e.linear_relpos(onehot) + e.linear_tf_z_i(tf_rows)[:, None] + e.linear_tf_z_j(tf)[None]
            r = self.rec
            sq = torch.linspace(r.min_bin, r.max_bin, r.no_bins, dtype=x.dtype, device=x.device) ** 2
            upper = torch.cat([sq[1:], sq.new_tensor([r.inf])])
            dist = torch.sum((x_rows[:, None, :] - x[None, :, :]) ** 2, dim=-1, keepdim=True)
            dgram = ((dist > sq) * (dist < upper)).to(x.dtype)
            return z + r.layer_norm_z(z_prev_rows) + r.linear(dgram)

    class EmbedMPrev(torch.nn.Module):
        def __init__(self, rec):
            super().__init__()
            self.rec = rec

        def forward(self, m_prev):
            return self.rec.layer_norm_m(m_prev)

    class Call(torch.nn.Module):
        def __init__(self, mod):
            super().__init__()
            self.mod = mod

        def forward(self, x):
            return self.mod(x)

    class SmPair(torch.nn.Module):
        def __init__(self, sm):
            super().__init__()
            self.ln, self.linear_b = sm.layer_norm_z, sm.ipa.linear_b

        def forward(self, z_rows):
            zln = self.ln(z_rows)
            return zln, self.linear_b(zln)

    class SmInit(torch.nn.Module):
        def __init__(self, sm):
            super().__init__()
            self.sm = sm

        def forward(self, s):
            s_initial = self.sm.layer_norm_s(s)
            return s_initial, self.sm.linear_in(s_initial)

    class IpaRows(torch.nn.Module):
        """Algorithm 22 for the query rows given (s_rows, frames_rows, mask_rows) against all keys."""

        def __init__(self, ipa):
            super().__init__()
            self.ipa = ipa

        def _points(self, linear, s, r, count):
            p = linear(s)
            p = torch.stack(torch.split(p, p.shape[-1] // 3, dim=-1), dim=-1)  # [*, H * P, 3]
            p = r[..., None].apply(p)
            return p.view(p.shape[:-2] + (self.ipa.no_heads, count, 3))

        def forward(self, s, frames, mask, s_rows, frames_rows, mask_rows, zln_rows, b_rows):
            ipa, h, pq = self.ipa, self.ipa.no_heads, self.ipa.no_qk_points
            r, r_rows = rigid_of(frames), rigid_of(frames_rows)
            q = ipa.linear_q(s_rows).view(s_rows.shape[:-1] + (h, -1))  # [K, H, C]
            kv = ipa.linear_kv(s).view(s.shape[:-1] + (h, -1))
            k, v = torch.split(kv, ipa.c_hidden, dim=-1)  # [N, H, C]
            q_pts = self._points(ipa.linear_q_points, s_rows, r_rows, pq)  # [K, H, P, 3]
            kv_pts = self._points(ipa.linear_kv_points, s, r, pq + ipa.no_v_points)
            k_pts, v_pts = torch.split(kv_pts, [pq, ipa.no_v_points], dim=-2)
            a = torch.matmul(q.permute(1, 0, 2), k.permute(1, 2, 0)) * math.sqrt(1.0 / (3 * ipa.c_hidden))
            a = a + math.sqrt(1.0 / 3) * b_rows.permute(2, 0, 1)  # [H, K, N]
            weights = ipa.softplus(ipa.head_weights) * math.sqrt(1.0 / (3 * (pq * 9.0 / 2)))
            dist = a.new_zeros(a.shape)
            for p in range(pq):  # a fixed model constant: no shape-dependent unrolling
                for c in range(3):
                    diff = q_pts[..., p, c].transpose(0, 1)[:, :, None] - k_pts[..., p, c].transpose(0, 1)[:, None, :]
                    dist = dist + diff * diff
            a = a - 0.5 * weights[:, None, None] * dist
            a = a + (ipa.inf * (mask_rows[:, None] * mask[None, :] - 1))[None]
            a = torch.softmax(a, dim=-1)  # [H, K, N]
            o = torch.matmul(a, v.transpose(0, 1)).transpose(0, 1).reshape(s_rows.shape[0], -1)  # [K, H*C]
            vp = v_pts.permute(1, 3, 0, 2)  # [H, 3, N, Pv]
            o_pt = torch.stack([torch.matmul(a, vp[:, c]) for c in range(3)], dim=-1)  # [H, K, Pv, 3]
            o_pt = r_rows[..., None, None].invert_apply(o_pt.permute(1, 0, 2, 3))  # [K, H, Pv, 3]
            o_pt_norm = torch.sqrt(torch.sum(o_pt ** 2, dim=-1) + ipa.eps).reshape(o.shape[0], -1)
            o_pt = o_pt.reshape(o.shape[0], -1, 3)
            o_pair = torch.matmul(a.transpose(0, 1), zln_rows).reshape(o.shape[0], -1)  # [K, H*C_z]
            return ipa.linear_out(torch.cat((o, *torch.unbind(o_pt, dim=-1), o_pt_norm, o_pair), dim=-1))

    class SmUpdate(torch.nn.Module):
        def __init__(self, sm):
            super().__init__()
            self.sm = sm

        def forward(self, s, update, frames):
            sm = self.sm
            s = sm.transition(sm.layer_norm_ipa(s + update))
            return s, tensor7(rigid_of(frames).compose_q_update_vec(sm.bb_update(s)))

    class SmFinal(torch.nn.Module):
        def __init__(self, sm, heads, atom37_index, atom37_exists):
            super().__init__()
            self.sm, self.plddt = sm, heads.plddt
            self.register_buffer("atom37_index", atom37_index)
            self.register_buffer("atom37_exists", atom37_exists)

        def forward(self, s, s_initial, frames, aatype):
            sm = self.sm
            rigid = rigid_of(frames)
            backbone = Rigid(Rotation(rot_mats=rigid.get_rots().get_rot_mats(), quats=None), rigid.get_trans())
            backbone = backbone.scale_translation(sm.trans_scale_factor)
            _, angles = sm.angle_resnet(s, s_initial)
            frames_all = sm.torsion_angles_to_frames(backbone, angles, aatype)
            atom14 = sm.frames_and_literature_positions_to_atom14_pos(frames_all, aatype)  # [N, 14, 3]
            index = self.atom37_index[aatype]  # [N, 37]
            exists = self.atom37_exists[aatype]
            atom37 = torch.gather(atom14, 1, index[..., None].expand(-1, -1, 3)) * exists[..., None]
            plddt = compute_plddt(self.plddt(s))
            return atom37, exists, pseudo_beta_fn(aatype, atom37, None), plddt

    class PtmRows(torch.nn.Module):
        """Per-alignment predicted TM terms for rows of z (AlphaFold2 supplement 1.9.7)."""

        def __init__(self, tm, max_bin: float = 31.0):
            super().__init__()
            self.tm, self.max_bin = tm, max_bin

        def forward(self, z_rows, mask):
            logits = self.tm(z_rows)  # [K, N, bins]
            bins = logits.shape[-1]
            edges = torch.linspace(0, self.max_bin, bins - 1, dtype=logits.dtype, device=logits.device)
            step = edges[1] - edges[0]
            centers = torch.cat([edges + step / 2, (edges[-1] + 1.5 * step)[None]])
            n = torch.clamp(mask.sum(), min=19.0)
            d0 = 1.24 * (n - 15) ** (1.0 / 3) - 1.8
            term = torch.sum(torch.softmax(logits, dim=-1) / (1 + centers ** 2 / d0 ** 2), dim=-1)
            return torch.sum(term * (mask / (1e-8 + mask.sum()))[None], dim=-1)

    return {"EmbedMsa": EmbedMsa, "EmbedPair": EmbedPair, "EmbedMPrev": EmbedMPrev, "Call": Call,
            "SmPair": SmPair, "SmInit": SmInit, "IpaRows": IpaRows, "SmUpdate": SmUpdate, "SmFinal": SmFinal,
            "PtmRows": PtmRows}


def atom37_tables():
    """(index [21, 37] int64 into atom14, exists [21, 37] float32) per residue type, from
    OpenFold's own atom14 mask construction."""
    import torch

    from openfold.data.data_transforms import make_atom14_masks

    masks = make_atom14_masks({"aatype": torch.arange(21)})
    return masks["residx_atom37_to_atom14"].long(), masks["atom37_atom_exists"].float()


def fold_modules(model) -> dict:
    """{name: module} of everything outside the two stacks, for an OpenFold AlphaFold model."""
    c = _classes()
    sm, heads = model.structure_module, model.aux_heads
    index, exists = atom37_tables()
    out = {
        "embed_msa": c["EmbedMsa"](model.input_embedder),
        "embed_pair": c["EmbedPair"](model.input_embedder, model.recycling_embedder),
        "embed_m_prev": c["EmbedMPrev"](model.recycling_embedder),
        "embed_extra": c["Call"](model.extra_msa_embedder),
        "single": c["Call"](model.evoformer.linear),
        "sm_pair": c["SmPair"](sm),
        "sm_init": c["SmInit"](sm),
        "ipa_rows": c["IpaRows"](sm.ipa),
        "sm_update": c["SmUpdate"](sm),
        "sm_final": c["SmFinal"](sm, heads, index, exists),
    }
    if hasattr(heads, "tm"):
        out["ptm_rows"] = c["PtmRows"](heads.tm)
    return {k: v.eval() for k, v in out.items()}
