"""Every ONNX graph of an OpenFold export besides the monolithic trunk: what each takes and
gives, with symbolic shapes, and sample feeds at the traced and at two unseen shapes.

Shapes use symbols for what varies at run time: N residues, K and J chunk rows, S MSA rows
(of the stack the graph belongs to); the other letters are channel widths read from the
model. The trunk-stack graphs are "evo.<kind>" and "extra.<kind>" (ops.py), the others are
named as in fold_ops.py. Torch and OpenFold are imported inside the functions.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

# graph -> (inputs [(name, dims, dtype)], outputs [(name, dims)]); "index" is the stacked-op selector
F, I = "float32", "int64"
STACK = {
    "row_bias": ([("z", "KNz", F)], [("bias", "hKN")]),
    "row_att": ([("m", "KNm", F), ("mask", "KN", F), ("bias", "hNN", F)], [("update", "KNm")]),
    "col_att": ([("m", "SKm", F), ("mask", "SK", F)], [("update", "SKm")]),
    "msa_trans": ([("m", "KNm", F)], [("update", "KNm")]),
    "opm_proj": ([("m", "KNm", F), ("mask", "KN", F)], [("a", "NKo"), ("b", "NKo")]),
    "opm_rows": ([("a", "KSo", F), ("b", "NSo", F), ("mask_rows", "SK", F), ("mask", "SN", F)], [("update", "KNz")]),
    "tm_proj": ([("z", "KJz", F), ("mask", "KJ", F)], [("p", "cKJ")]),
    "tm_tile": ([("a", "cKN", F), ("b", "cJN", F), ("z", "KJz", F)], [("update", "KJz")]),
    "ta_bias": ([("z", "KNz", F)], [("bias", "pKN")]),
    "ta_rows": ([("z", "KNz", F), ("mask", "KN", F), ("bias", "pNN", F)], [("update", "KNz")]),
    "pair_trans": ([("z", "KNz", F)], [("update", "KNz")]),
}
FOLD = {
    "embed_msa": ([("tf", "Nt", F), ("msa_feat", "KNf", F)], [("m", "KNm")]),
    "embed_pair": ([("tf_rows", "Kt", F), ("ri_rows", "K", I), ("tf", "Nt", F), ("ri", "N", I),
                    ("z_prev", "KNz", F), ("x_rows", "K3", F), ("x", "N3", F)], [("z_out", "KNz")]),
    "embed_m_prev": ([("m_prev", "Nm", F)], [("m0", "Nm")]),
    "embed_extra": ([("feat", "KNx", F)], [("a", "KNe")]),
    "single": ([("m0", "Nm", F)], [("s", "Ns")]),
    "sm_pair": ([("z", "KNz", F)], [("zln", "KNz"), ("b", "KNi")]),
    "sm_init": ([("s", "Ns", F)], [("s_initial", "Ns"), ("s0", "Ns")]),
    "ipa_rows": ([("s", "Ns", F), ("frames", "N7", F), ("mask", "N", F), ("s_rows", "Ks", F),
                  ("frames_rows", "K7", F), ("mask_rows", "K", F), ("zln", "KNz", F), ("b", "KNi", F)],
                 [("update", "Ks")]),
    "sm_update": ([("s", "Ns", F), ("update", "Ns", F), ("frames", "N7", F)], [("s_out", "Ns"), ("frames_out", "N7")]),
    "sm_final": ([("s", "Ns", F), ("s_initial", "Ns", F), ("frames", "N7", F), ("aatype", "N", I)],
                 [("atom37", "N@3"), ("atom37_mask", "N@"), ("pseudo_beta", "N3"), ("plddt", "N")]),
    "ptm_rows": ([("z", "KNz", F), ("mask", "N", F)], [("tm", "K")]),
}
SYMBOLS = {"N": "N", "K": "K", "J": "J", "S": "S"}
TRACE = {"N": 12, "K": 5, "J": 4, "S": 3}
UNSEEN = ({"N": 17, "K": 7, "J": 9, "S": 4}, {"N": 9, "K": 9, "J": 2, "S": 1})


def widths(of_cfg, stack: str | None = None) -> dict:
    """Channel letters -> sizes for the graphs of `stack` ("evo", "extra") or the fold graphs."""
    g, m = of_cfg.globals, of_cfg.model
    evo = m.evoformer_stack if stack != "extra" else m.extra_msa.extra_msa_stack
    return {"m": int(evo.c_m), "z": int(g.c_z), "o": int(evo.c_hidden_opm), "c": int(evo.c_hidden_mul),
            "h": int(evo.no_heads_msa), "p": int(evo.no_heads_pair), "t": int(m.input_embedder.tf_dim),
            "f": int(m.input_embedder.msa_dim), "x": int(m.extra_msa.extra_msa_embedder.c_in),
            "e": int(g.c_e), "s": int(g.c_s), "i": int(m.structure_module.no_heads_ipa), "3": 3, "7": 7, "@": 37}


def signature(table: Mapping[str, tuple], kind: str, stacked: bool):
    inputs, outputs = table[kind]
    names_in = (["index"] if stacked else []) + [n for n, _, _ in inputs]
    axes = {}
    for name, dims in [(n, d) for n, d, _ in inputs] + list(outputs):
        sym = {i: SYMBOLS[d] for i, d in enumerate(dims) if d in SYMBOLS}
        if sym:
            axes[name] = sym
    return names_in, [n for n, _ in outputs], axes


def _unit_quats(rng, n):
    q = rng.normal(size=(n, 4))
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def sample_feed(table, kind: str, dims: Mapping[str, int], width: Mapping[str, int], seed: int,
                count: int | None = None) -> dict:
    """Random inputs of the right shapes and kinds (binary masks with zeros, unit quaternions,
    residue types), in input order; `count` is the stacked graph's number of ops."""
    rng = np.random.default_rng(seed)
    feed = {}
    if count is not None:
        feed["index"] = np.array([rng.integers(0, count)], dtype=np.int64)
    for name, spec, dtype in table[kind][0]:
        shape = tuple(dims.get(d, width.get(d)) for d in spec)
        if name == "aatype":
            feed[name] = rng.integers(0, 21, size=shape).astype(np.int64)
        elif dtype == I:
            feed[name] = np.sort(rng.integers(0, 3 * max(shape), size=shape)).astype(np.int64)
        elif "mask" in name:
            feed[name] = (rng.random(shape) > 0.15).astype(np.float32)
        elif name.startswith("frames"):
            frames = np.concatenate([_unit_quats(rng, shape[0]), rng.normal(scale=3.0, size=(shape[0], 3))], axis=1)
            feed[name] = frames.astype(np.float32)
        elif name in ("x", "x_rows"):
            feed[name] = rng.normal(scale=8.0, size=shape).astype(np.float32)
        else:
            feed[name] = rng.normal(size=shape).astype(np.float32)
    return feed


def graph_modules(model, precision: str = "fp32") -> dict:
    """{graph name: (module, table, kind, stacked count or None, stack or None)} for an AlphaFold model."""
    from xopt.models.openfold.fold_ops import fold_modules
    from xopt.models.openfold.ops import stack_ops

    out = {}
    stacks = {"evo": model.evoformer}
    if model.config.extra_msa.enabled:
        stacks["extra"] = model.extra_msa_stack
    for stack, mod in stacks.items():
        for kind, op in stack_ops(mod, precision).items():
            out[f"{stack}.{kind}"] = (op, STACK, kind, op.count, stack)
    for name, mod in fold_modules(model).items():
        out[name] = (mod, FOLD, name, None, None)
    return out


def graphs(built) -> list:
    """The spec's `graphs` hook: every graph besides the trunk, for this build's precision."""
    from xopt.spec import Graph

    model, of_cfg = built.extra["model"], built.extra["openfold_config"]
    result = []
    for name, (module, table, kind, count, stack) in graph_modules(model, built.settings["precision"]).items():
        width = widths(of_cfg, stack)
        names_in, names_out, axes = signature(table, kind, count is not None)
        seed = sum(map(ord, name))
        result.append(Graph(name=name, module=module, input_names=names_in, output_names=names_out,
                            dynamic_axes=axes, example=sample_feed(table, kind, TRACE, width, seed, count),
                            validation=[sample_feed(table, kind, d, width, seed + 1 + i, count)
                                        for i, d in enumerate(UNSEEN)]))
    return result


def meta(model, of_cfg) -> dict:
    """What the host loops need besides the graphs (goes into the manifest entry's settings)."""
    blocks = {"evo": len(model.evoformer.blocks)}
    if model.config.extra_msa.enabled:
        blocks["extra"] = len(model.extra_msa_stack.blocks)
    return {"blocks": blocks, "structure_blocks": int(of_cfg.model.structure_module.no_blocks),
            "ptm": bool(of_cfg.model.heads.tm.enabled), "c_m": int(of_cfg.globals.c_m), "c_z": int(of_cfg.globals.c_z)}
