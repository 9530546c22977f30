"""Trunk inputs that look like the real thing, and what drift needs to fold them.

Feeds are produced by OpenFold's own input embedder from a random sequence and MSA (so m and
z have the statistics the trunk sees in a prediction), optionally with masked tail rows and
residues (padding). Each feed is remembered with its sequence and the model it came from, so
`drift` can run the structure module and pLDDT head on trunk outputs: the main graph (what the
profiler runs) covers the trunk, while drift is reported in structure terms.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

import numpy as np

_MODELS: dict[str, tuple] = {}  # model key -> (AlphaFold, OpenFold config)
_FEEDS: dict[str, dict] = {}  # feed fingerprint -> {"aatype", "model_key", "n_real"}
_MAX_FEEDS = 256


def model_key(config: Mapping[str, Any], seed: int, checkpoint: str | None) -> str:
    from xopt.models.openfold.network import NETWORK_KEYS

    net = {k: config.get(k) for k in (*NETWORK_KEYS, "openfold_preset", "low_prec")}
    net["low_prec"] = bool(config.get("low_prec", config.get("precision") == "fp16"))
    return json.dumps({"net": net, "seed": int(seed), "checkpoint": checkpoint}, sort_keys=True)


def model_for(config: Mapping[str, Any], seed: int = 0, checkpoint: str | None = None):
    """(AlphaFold, OpenFold config, weights info) for a config, built once per process.
    Precision and chunking only change the trunk wrapper, not the key."""
    from xopt.models.openfold.network import build_alphafold

    key = model_key(config, seed, checkpoint)
    if key not in _MODELS:
        if len(_MODELS) >= 2:  # the real model is ~370 MB: keep at most two around
            _MODELS.pop(next(iter(_MODELS)))
        _MODELS[key] = build_alphafold(config, seed=seed, checkpoint=checkpoint)
    return _MODELS[key]


def fingerprint(feed: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha1()
    for name in ("m", "z", "msa_mask"):
        a = np.ascontiguousarray(feed[name])
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def remember(feed, aatype: np.ndarray, key: str, n_real: int) -> None:
    if len(_FEEDS) >= _MAX_FEEDS:
        _FEEDS.pop(next(iter(_FEEDS)))
    _FEEDS[fingerprint(feed)] = {"aatype": np.asarray(aatype), "model_key": key, "n_real": int(n_real)}


def context_of(feed) -> dict | None:
    return _FEEDS.get(fingerprint(feed))


def embedded_feed(model, n_msa: int, n_res: int, seed: int, pad_msa: int = 0, pad_res: int = 0):
    """(feed, aatype): m, z from OpenFold's input embedder for a random sequence with an
    MSA of `n_msa` rows, plus `pad_msa`/`pad_res` masked rows/residues at the end."""
    import torch

    rng = np.random.default_rng(seed)
    aatype = rng.integers(0, 20, size=n_res)
    s_tot, n_tot = n_msa + pad_msa, n_res + pad_res
    tf = np.zeros((n_tot, 22), np.float32)
    tf[np.arange(n_res), aatype + 1] = 1.0  # target_feat: slot 0 is "between segments"
    msa = np.where(rng.random((s_tot, n_tot)) < 0.3, rng.integers(0, 21, (s_tot, n_tot)), np.resize(aatype, n_tot))
    msa_feat = np.zeros((s_tot, n_tot, 49), np.float32)
    msa_feat[np.arange(s_tot)[:, None], np.arange(n_tot)[None], msa] = 1.0
    msa_feat[..., 25:48] = rng.dirichlet(np.ones(23), size=n_tot)[None].astype(np.float32)  # cluster profile
    with torch.no_grad():
        m, z = model.input_embedder(torch.from_numpy(tf), torch.arange(n_tot).float(), torch.from_numpy(msa_feat))
    msa_mask = np.zeros((s_tot, n_tot), np.float32)
    msa_mask[:n_msa, :n_res] = 1.0
    seq_mask = np.zeros(n_tot, np.float32)
    seq_mask[:n_res] = 1.0
    feed = {"m": m.numpy().astype(np.float32), "z": z.numpy().astype(np.float32), "msa_mask": msa_mask,
            "pair_mask": (seq_mask[:, None] * seq_mask[None, :]).astype(np.float32)}
    full_aatype = np.concatenate([aatype, np.full(pad_res, 20)]).astype(np.int64)
    return feed, full_aatype


def make_feeds(config: Mapping[str, Any], shapes, seed: int = 0, weights_seed: int = 0,
               checkpoint: str | None = None) -> list[dict]:
    """Feeds for (n_msa, n_res, pad_msa, pad_res) tuples, remembered for `drift`."""
    model, _, _ = model_for(config, weights_seed, checkpoint)
    key = model_key(config, weights_seed, checkpoint)
    feeds = []
    for i, (s, n, ps, pn) in enumerate(shapes):
        feed, aatype = embedded_feed(model, s, n, seed * 1000 + i, ps, pn)
        remember(feed, aatype, key, n)
        feeds.append(feed)
    return feeds


def perturb(feed: Mapping[str, np.ndarray], rng: np.random.Generator) -> dict:
    """The noise floor's input change: m and z scaled by (1 + e*N(0,1)) with e = 2^-11, the
    relative rounding step of FP16 (what the FP16 variant does to its inputs at most)."""
    eps = 2.0 ** -11
    out = dict(feed)
    for name in ("m", "z"):
        x = np.asarray(feed[name], np.float32)
        out[name] = (x * (1.0 + eps * rng.standard_normal(x.shape))).astype(np.float32)
    ctx = context_of(feed)
    if ctx is not None:
        remember(out, ctx["aatype"], ctx["model_key"], ctx["n_real"])
    return out


def _pair_terms(ref_z: np.ndarray, out_z: np.ndarray, n: int) -> dict:
    r = np.asarray(ref_z, np.float64)[:n, :n]
    o = np.asarray(out_z, np.float64)[:n, :n]
    d = o - r
    norm = float(np.linalg.norm(r)) or 1.0
    return {"pair_max_abs": float(np.abs(d).max(initial=0.0)), "pair_mean_abs": float(np.abs(d).mean()),
            "pair_rel_err": float(np.linalg.norm(d) / norm),
            "pair_cosine": float(np.sum(r * o) / (norm * (float(np.linalg.norm(o)) or 1.0)))}


def drift(ref: Mapping[str, np.ndarray], out: Mapping[str, np.ndarray], feed: Mapping[str, np.ndarray]) -> dict:
    """Structure terms (C-alpha RMSD, lDDT-Ca, GDT-TS, pLDDT difference) from folding both
    trunk outputs with the same structure module, plus pair-representation statistics."""
    from xopt.models.openfold.metrics import structure_drift

    if not all(np.isfinite(out[k]).all() for k in ("m_out", "z_out", "s")):
        return {"finite": False, "passed": False}
    ctx = context_of(feed)
    n = ctx["n_real"] if ctx else int(np.asarray(feed["pair_mask"]).diagonal().sum())
    terms = _pair_terms(ref["z_out"], out["z_out"], n)
    if ctx is None or ctx["model_key"] not in _MODELS:
        terms["structure"] = "unavailable (feed not made by the openfold spec in this process)"
        return terms
    from xopt.models.openfold.fold import structure_from_trunk

    model = _MODELS[ctx["model_key"]][0]
    aa = ctx["aatype"][:n]
    a = structure_from_trunk(model, ref["s"][:n], ref["z_out"][:n, :n], aa)
    b = structure_from_trunk(model, out["s"][:n], out["z_out"][:n, :n], aa)
    terms.update(structure_drift(a["ca"], b["ca"], a["plddt"], b["plddt"]))
    return terms
