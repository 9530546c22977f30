"""AlphaFold2 inference driven from the host over ONNX graphs: numpy and sessions only.

Follows OpenFold's `AlphaFold.iteration`/`forward` for the no-template presets: input and
recycling embedders, extra-MSA stack, Evoformer, structure module (8 layers of IPA over
query-row chunks), pLDDT and pTM heads, recycling. Activations live in host memory and are
built and updated chunk by chunk (host.py), so the largest tensors are the pair
representation, one projection store of the same size during a triangle multiplication
(FP16 storage halves both) and [H, N, N] biases. Imports neither torch nor OpenFold.
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from xopt.models.openfold.features import extra_msa_feat
from xopt.models.openfold.host import STORAGE, StackRunner, f32, run_rows, spans


class HostFold:
    def __init__(self, sessions: Mapping, meta: Mapping, chunk: int | None = None, attn_chunk: int | None = None,
                 storage: str = "fp32", tick: Callable | None = None):
        self.s, self.meta = sessions, meta
        self.chunk, self.attn_chunk = chunk, attn_chunk or chunk
        self.storage = STORAGE[storage]
        self.tick = tick or (lambda what: None)
        self.stacks = {name: StackRunner(sessions, name, count, chunk, self.attn_chunk, storage, self.tick)
                       for name, count in meta["blocks"].items()}

    def _empty(self, shape):
        return np.empty(shape, self.storage)

    def embed_msa(self, f, m_prev) -> np.ndarray:
        """m [S, N, c_m], the recycled first row added."""
        s_len, n = f["msa_feat"].shape[:2]
        tf = f32(f["target_feat"])
        m = self._empty((s_len, n, int(self.meta["c_m"])))
        for a, c in spans(s_len, self.chunk):
            m[a:c] = self.s["embed_msa"].run({"tf": tf, "msa_feat": f32(f["msa_feat"][a:c])})["m"]
        m[0] += self.s["embed_m_prev"].run({"m_prev": f32(m_prev)})["m0"]
        return m

    def embed_pair(self, f, z, x_prev) -> None:
        """z, written in place over z_prev (each row chunk reads its own rows of z_prev first)."""
        n = z.shape[0]
        tf = f32(f["target_feat"])
        ri = np.asarray(f["residue_index"], np.int64)
        for a, c in spans(n, self.chunk):
            z[a:c] = self.s["embed_pair"].run({"tf_rows": tf[a:c], "ri_rows": ri[a:c], "tf": tf, "ri": ri,
                                               "z_prev": f32(z[a:c]), "x_rows": f32(x_prev[a:c]),
                                               "x": f32(x_prev)})["z_out"]

    def extra_stack(self, f, z, pair_mask) -> None:
        if "extra" not in self.stacks:
            return
        e_len, n = f["extra_msa"].shape[:2]
        a = None
        for r0, r1 in spans(e_len, self.chunk):
            feat = extra_msa_feat(f["extra_msa"][r0:r1], f["extra_has_deletion"][r0:r1],
                                  f["extra_deletion_value"][r0:r1])
            out = self.s["embed_extra"].run({"feat": feat})["a"]
            if a is None:
                a = self._empty((e_len,) + out.shape[1:])
            a[r0:r1] = out
        self.stacks["extra"](a, z, f32(f["extra_msa_mask"]), pair_mask)

    def structure(self, s_evo, z, f) -> dict:
        n = z.shape[0]
        zln = b = None
        for a, c in spans(n, self.chunk):
            out = self.s["sm_pair"].run({"z": f32(z[a:c])})
            if zln is None:
                zln, b = self._empty(z.shape), np.empty((n, n, out["b"].shape[-1]), np.float32)
            zln[a:c], b[a:c] = out["zln"], out["b"]
        init = self.s["sm_init"].run({"s": f32(s_evo)})
        s_initial, s = init["s_initial"], init["s0"]
        frames = np.zeros((n, 7), np.float32)
        frames[:, 0] = 1.0  # identity: unit quaternion, zero translation
        mask = f32(f["seq_mask"])
        for _ in range(int(self.meta["structure_blocks"])):
            upd = run_rows(self.s["ipa_rows"], n, self.attn_chunk, lambda r0, r1: {
                "s": s, "frames": frames, "mask": mask, "s_rows": s[r0:r1], "frames_rows": frames[r0:r1],
                "mask_rows": mask[r0:r1], "zln": f32(zln[r0:r1]), "b": b[r0:r1]})["update"]
            out = self.s["sm_update"].run({"s": s, "update": upd, "frames": frames})
            s, frames = out["s_out"], out["frames_out"]
        del zln, b
        final = self.s["sm_final"].run({"s": s, "s_initial": s_initial, "frames": frames,
                                        "aatype": np.asarray(f["aatype"], np.int64)})
        return {**final, "single": s}

    def ptm(self, z, seq_mask) -> float:
        mask = f32(seq_mask)
        tm = run_rows(self.s["ptm_rows"], z.shape[0], self.chunk, lambda a, c: {"z": f32(z[a:c]), "mask": mask})["tm"]
        return float(tm[int(np.argmax(tm * mask))])

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict:
        """`batch`: features with a trailing recycling axis (features.make_batch)."""
        cycles = batch["aatype"].shape[-1]
        n = batch["aatype"].shape[0]
        m_prev = z = x_prev = None
        for c in range(cycles):
            f = {k: v[..., c] for k, v in batch.items()}
            if z is None:
                m_prev, x_prev = np.zeros((n, int(self.meta["c_m"])), np.float32), np.zeros((n, 3), np.float32)
                z = np.zeros((n, n, int(self.meta["c_z"])), self.storage)
            seq_mask = f32(f["seq_mask"])
            pair_mask = seq_mask[:, None] * seq_mask[None, :]
            self.embed_pair(f, z, x_prev)
            self.tick(f"iteration {c + 1}/{cycles}: extra MSA stack")
            self.extra_stack(f, z, pair_mask)
            m = self.embed_msa(f, m_prev)  # after the extra stack: m need not wait beside its activations
            self.tick(f"iteration {c + 1}/{cycles}: Evoformer")
            self.stacks["evo"](m, z, f32(f["msa_mask"]), pair_mask)
            m_prev = np.array(m[0], np.float32)
            del m  # the structure module needs only s and z
            s_evo = self.s["single"].run({"m0": m_prev})["s"]
            out = self.structure(s_evo, z, f)
            x_prev = out["pseudo_beta"]
        res = {"final_atom_positions": out["atom37"], "final_atom_mask": out["atom37_mask"],
               "plddt": out["plddt"], "single": out["single"], "aatype": np.asarray(f["aatype"]),
               "residue_index": np.asarray(f["residue_index"])}
        if self.meta.get("ptm") and "ptm_rows" in self.s:
            res["ptm"] = self.ptm(z, f["seq_mask"])
        return res
