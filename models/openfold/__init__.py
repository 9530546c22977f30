"""AlphaFold2 through OpenFold: the Evoformer trunk exported, the rest in PyTorch.

The graph covers the 48-block Evoformer stack, `(m [S,N,c_m], z [N,N,c_z], msa_mask [S,N],
pair_mask [N,N]) -> (m_out, z_out, s)` with dynamic S and N. Embedders, extra-MSA stack,
structure module, heads and recycling run in PyTorch (pipeline.py).

Chunking: OpenFold's `chunk_size` (attention and transitions) and LMA unroll at trace time,
so chunked/LMA configs export *bucket graphs*: padded inside the graph to `bucket_msa` x
`bucket_residues` and correct for any smaller S, N (see trunk.py). Unchunked configs
export a truly dynamic graph. This module imports neither torch nor OpenFold.
"""
from __future__ import annotations

from typing import Any, Mapping

from xopt.registry import register
from xopt.spec import EvalHooks
from xopt.spec import Built, FitHooks, ModelSpec, Tolerance, Variant, Weights

_TINY = {
    "openfold_preset": "model_3_ptm", "evoformer_blocks": 2, "extra_msa_blocks": 1, "structure_blocks": 2,
    "c_m": 32, "c_z": 16, "c_s": 32, "c_e": 16, "msa_heads": 4, "msa_hidden": 8, "pair_heads": 2, "pair_hidden": 8,
    "tri_mul_hidden": 16, "opm_hidden": 8, "ipa_heads": 4, "ipa_hidden": 8, "resnet_hidden": 16, "lddt_hidden": 16,
    "msa_depth": 8, "extra_msa_depth": 16, "recycles": 1,
    "trace_shape": [4, 16], "validation_shapes": [[6, 24, 0, 0], [3, 20, 2, 4]],
    "bucket_msa": 8, "bucket_residues": 32, "variant_chunk_size": 4, "lma_chunks": [8, 16],
}
# model_3_ptm at AlphaFold2's real shapes (48 blocks, c_m 256, c_z 128); MSA depths as in
# AlphaFold's inference (512 clusters, 5120 extra rows), trimmed to what an alignment has.
_DEFAULT = {
    "openfold_preset": "model_3_ptm", "msa_depth": 512, "extra_msa_depth": 5120, "recycles": 3,
    "trace_shape": [4, 16], "validation_shapes": [[6, 24, 0, 0], [3, 20, 2, 4]],
    "bucket_msa": 128, "bucket_residues": 256, "variant_chunk_size": 64, "lma_chunks": [256, 1024],
}
CONFIGS = {"tiny": _TINY, "default": _DEFAULT}
COMMON = {"precision": "fp32", "chunk_size": None, "lma": False}

NAMES_IN = ("m", "z", "msa_mask", "pair_mask")
NAMES_OUT = ("m_out", "z_out", "s")
DYNAMIC = {"m": {0: "S", 1: "N"}, "z": {0: "N", 1: "N"}, "msa_mask": {0: "S", 1: "N"},
           "pair_mask": {0: "N", 1: "N"}, "m_out": {0: "S", 1: "N"}, "z_out": {0: "N", 1: "N"}, "s": {0: "N"}}
# cap on unrolled chunk bodies in one bucket graph (beyond it export and ORT load take ages)
MAX_CHUNK_BODIES = 20_000


def _cfg(config: Mapping[str, Any] | None) -> dict:
    config = dict(config or {})
    preset = config.get("preset", "default")
    return {**COMMON, **CONFIGS.get(preset, _DEFAULT), **config}


def trunk_settings(cfg: Mapping[str, Any]) -> dict:
    """Resolve a config (plus a variant's export_config) to the trunk's settings."""
    chunk = cfg.get("chunk_size")
    if cfg.get("chunked") and not chunk:
        chunk = cfg["variant_chunk_size"]
    lma = bool(cfg.get("lma"))
    settings = {"precision": cfg.get("precision", "fp32"), "chunk_size": int(chunk) if chunk else None,
                "attn_chunk_size": int(cfg["attn_chunk_size"]) if chunk and cfg.get("attn_chunk_size") else None,
                "tri_mul_chunk": cfg.get("tri_mul_chunk"),
                "lma": lma, "lma_chunks": list(cfg["lma_chunks"]) if lma and cfg.get("lma_chunks") else None,
                "bucket": None}
    if settings["chunk_size"] or lma:
        settings["bucket"] = [int(cfg["bucket_msa"]), int(cfg["bucket_residues"])]
    return settings


def chunk_bodies(settings: Mapping[str, Any], blocks: int) -> int:
    """Chunk bodies one bucket graph unrolls. Per block: MSA row attention over S and the two
    triangle attentions over N (attention chunk); MSA transition over S, column attention,
    outer product and pair transition over N (chunk)."""
    if not settings.get("bucket") or not settings.get("chunk_size"):
        return 0
    s, n = settings["bucket"]
    c = settings["chunk_size"]
    a = settings.get("attn_chunk_size") or c
    return blocks * (-(-s // a) + 2 * -(-n // a) + -(-s // c) + 3 * -(-n // c))


def build(checkpoint=None, config=None, seed: int = 0) -> Built:
    from xopt.errors import UserError
    from xopt.models.openfold.inputs import make_feeds, model_for
    from xopt.models.openfold.trunk import check_finite, make_trunk

    cfg = _cfg(config)
    settings = trunk_settings(cfg)
    net_cfg = {**cfg, "low_prec": cfg.get("low_prec", settings["precision"] == "fp16")}
    model, of_cfg, info = model_for(net_cfg, seed, str(checkpoint) if checkpoint else None)
    bodies = chunk_bodies(settings, of_cfg.model.evoformer_stack.no_blocks)
    if bodies > MAX_CHUNK_BODIES:
        raise UserError(f"chunk size {settings['chunk_size']} at a {settings['bucket'][1]}-residue bucket unrolls "
                        f"{bodies} chunk bodies into one graph",
                        "pick a larger chunk size or smaller bucket_residues, or run chunked in PyTorch "
                        "(xopt run/fit with the torch backend)")
    trunk = make_trunk(model.evoformer, settings)
    if settings["precision"] != "fp32":
        import torch

        # a precision that overflows fails here, naming the module, rather than as a parity
        # number (eager runs skip the bucket padding, so this stays cheap for bucket graphs)
        feed = make_feeds(cfg, [_trace_shape(cfg)], seed=seed, weights_seed=seed, checkpoint=info.get("path"))[0]
        check_finite(trunk, [torch.from_numpy(feed[k]) for k in NAMES_IN], f"openfold trunk ({settings['precision']})")
    weights = Weights(kind=info["kind"], seed=info.get("seed"), path=info.get("path"), sha256=info.get("sha256"),
                      note=info.get("note", ""))
    return Built(module=trunk, weights=weights, config=cfg, settings=settings,
                 extra={"model": model, "openfold_config": of_cfg, "bucket_bodies": bodies})


def _trace_shape(cfg) -> tuple[int, int, int, int]:
    s, n = cfg["trace_shape"]
    return (s, n, 0, 0)


def _fit_bucket(shape, settings):
    """Validation shapes for bucket graphs must fit the bucket; shrink rather than skip."""
    if not settings.get("bucket"):
        return tuple(shape)
    s, n, ps, pn = shape
    bs, bn = settings["bucket"]
    s, n = min(s, bs), min(n, bn)
    return (s, n, min(ps, bs - s), min(pn, bn - n))


def _feeds(built: Built, shapes, seed: int) -> list[dict]:
    from xopt.models.openfold.inputs import make_feeds

    return make_feeds(built.config, shapes, seed=seed, weights_seed=built.weights.seed or 0,
                      checkpoint=built.weights.path)


def example_inputs(built: Built) -> dict:
    return _feeds(built, [_trace_shape(built.config)], seed=0)[0]


def validation_inputs(built: Built) -> list[dict]:
    shapes = [_fit_bucket(tuple(s), built.settings) for s in built.config["validation_shapes"]]
    return _feeds(built, shapes, seed=1)


def calibration_inputs(built: Built, n: int):
    s, n_res = built.config["trace_shape"]
    return _feeds(built, [(s, n_res, 0, 0)] * n, seed=2)


def profile_inputs(targets: Mapping[str, Any], n: int, seed: int) -> list[dict]:
    """`targets`: the profile's openfold targets; the profiler adds "config" (and may add
    "weights") from the manifest so the feeds match the exported network. Every variant sees
    the same feeds, so sizes stay within the config's bucket (what its chunked variants
    accept) and within `profile_max_residues` (default 64): profiling runs on the host."""
    from xopt.models.openfold.inputs import make_feeds

    cfg = _cfg(targets.get("config"))
    weights = dict(targets.get("weights") or {})
    residues = sorted(int(r) for r in targets.get("residues", [64])) or [64]
    n_cap, s_cap = sample_caps(cfg, targets)
    shapes = [(min(int(targets.get("msa_rows", 8)), s_cap), min(residues[i % len(residues)], n_cap), 0, 0)
              for i in range(max(1, n))]
    return make_feeds(cfg, shapes, seed=seed, weights_seed=int(weights.get("seed") or 0),
                      checkpoint=weights.get("path") if weights.get("kind") == "checkpoint" else None)


def sample_caps(cfg: Mapping[str, Any], targets: Mapping[str, Any]) -> tuple[int, int]:
    """(max residues, max MSA rows) of sample inputs: the bucket and the profiling cap."""
    return (min(int(targets.get("profile_max_residues", 64)), int(cfg["bucket_residues"])), int(cfg["bucket_msa"]))


def budget_checks(targets: Mapping[str, Any], result: Mapping[str, Any]) -> list[dict]:
    """Seconds per prediction (one end-to-end fold, recycling included) against the target."""
    limit = targets.get("seconds_per_prediction")
    e2e = result.get("latency_e2e_ms") or {}
    if not limit or not e2e.get("p50"):
        return []
    seconds = e2e["p50"] / 1e3
    return [{"name": "time per prediction [this host, profiling length]", "passed": seconds <= float(limit),
             "value": round(seconds, 2), "limit": float(limit), "unit": "s"}]


# measured at real shapes with seeded weights (N=20-24): FP16 max 5e-3 / mean 7e-4 on z_out;
# BF16 (torch, N=48-64) max 0.38 / mean 0.024. Bounds leave ~10x (FP16) and ~2x (BF16) margin.
_FP16_TOL = Tolerance(max_abs=0.1, mean_abs=5e-3)
_BF16_TOL = Tolerance(max_abs=1.0, mean_abs=5e-2)
VARIANTS = {
    "fp32": Variant("fp32", "fp32", tolerance=Tolerance(max_abs=1e-3), description="FP32 trunk, dynamic S and N"),
    "bf16": Variant("bf16", "bf16", tolerance=_BF16_TOL, export_config={"precision": "bf16"},
                    description="BF16 trunk, FP32 islands (layer norms, attention logits, outer product, "
                                "triangle reduction); needs BF16 kernels (CUDA/TensorRT EP, not ORT CPU)"),
    "fp16": Variant("fp16", "fp16", tolerance=_FP16_TOL, export_config={"precision": "fp16"},
                    description="FP16 trunk with OpenFold's low_prec (inf 1e4, eps 1e-4) and FP32 islands"),
    "fp32-chunk": Variant("fp32-chunk", "fp32", tolerance=Tolerance(max_abs=1e-3),
                          export_config={"precision": "fp32", "chunked": True},
                          description="FP32, OpenFold chunking (variant_chunk_size), bucket graph"),
    "fp16-chunk": Variant("fp16-chunk", "fp16", tolerance=_FP16_TOL, export_config={"precision": "fp16", "chunked": True},
                          description="FP16 + FP32 islands, OpenFold chunking, bucket graph"),
    "bf16-chunk": Variant("bf16-chunk", "bf16", tolerance=_BF16_TOL, export_config={"precision": "bf16", "chunked": True},
                          description="BF16 + FP32 islands, OpenFold chunking, bucket graph (GPU EPs)"),
    "fp32-lma": Variant("fp32-lma", "fp32", tolerance=Tolerance(max_abs=1e-3), export_config={"lma": True},
                        description="FP32, low-memory attention (lma_chunks query/key chunks), bucket graph"),
}

SPEC = register(ModelSpec(
    name="openfold",
    task="protein structure prediction",
    build=build,
    input_names=NAMES_IN,
    output_names=NAMES_OUT,
    dynamic_axes=DYNAMIC,
    example_inputs=example_inputs,
    validation_inputs=validation_inputs,
    variants=VARIANTS,
    calibration_inputs=calibration_inputs,
    drift="xopt.models.openfold.inputs:drift",
    perturb="xopt.models.openfold.inputs:perturb",
    profile_inputs=profile_inputs,
    pipeline="xopt.models.openfold.pipeline:OpenFoldPipeline",
    opset=17,
    exporter="legacy",
    patchers=tuple(f"xopt.models.openfold.patchers:{name}" for name in
                   ("permute_symbolic", "msa_bias_without_row_loop", "no_activation_checkpointing")),
    configs=CONFIGS,
    default_config="default",
    covers="evoformer trunk (structure module and heads run in PyTorch)",
    drift_keys=("ca_rmsd", "lddt_ca", "gdt_ts", "plddt_mean_abs_diff", "pair_rel_err"),
    budget_checks=budget_checks,
    packages=("openfold",),
    fit=FitHooks(search="xopt.models.openfold.budget:fit_report", chunk="xopt.models.openfold.budget:chunk_options"),
    # xopt eval: C-alpha RMSD, GDT-TS, lDDT-Ca, TM-score against PDB/mmCIF references; pLDDT, C-alpha
    # spacing and clash checks
    evaluation=EvalHooks(
        dataset="xopt.models.openfold.evaluate:read_dataset", predict="xopt.models.openfold.evaluate:predict",
        score="xopt.models.openfold.evaluate:score", aggregate="xopt.models.openfold.evaluate:aggregate",
        prediction_paths="xopt.models.openfold.evaluate:prediction_paths",
        read_prediction="xopt.models.openfold.evaluate:read_prediction",
        item_checks="xopt.models.openfold.evaluate:item_checks", checks="xopt.models.openfold.checks:checks",
        run_checks="xopt.models.openfold.checks:run_checks",
        metrics={"ca_rmsd": "lower", "gdt_ts": "higher", "lddt_ca": "higher", "tm_score": "higher",
                 "plddt_mean": "higher", "coverage": "higher"},
        options={"chain": "reference chain id to score against (default: the chain that aligns best)"}),
))
