"""AlphaFold2 through OpenFold, the whole model as ONNX graphs with recycling on the host.

Each variant ships a main graph, the 48-block Evoformer stack `(m [S,N,c_m], z [N,N,c_z],
msa_mask [S,N], pair_mask [N,N]) -> (m_out, z_out, s)` with dynamic S and N, and beside it
(spec `graphs`, graphs.py) the embedders, the extra-MSA and Evoformer blocks cut into
chunkable operations (ops.py), the structure module and the heads (fold_ops.py), each with
dynamic N and S. `xopt.runtime.load` assembles them (session.py): chunked variants run the
trunk host-driven over chunks of any size (host.py), and `fold()` runs the whole model in
numpy plus ONNX Runtime (hostfold.py), so no graph unrolls a chunk loop and every graph is
correct at every N. This module imports neither torch nor OpenFold.
"""
from __future__ import annotations

from typing import Any, Mapping

from xopt.registry import register
from xopt.spec import EvalHooks
from xopt.spec import Built, DriftGate, FitHooks, ModelSpec, ShapeFlag, Tolerance, Variant, Weights

_TINY = {
    "openfold_preset": "model_3_ptm", "evoformer_blocks": 2, "extra_msa_blocks": 1, "structure_blocks": 2,
    "c_m": 32, "c_z": 16, "c_s": 32, "c_e": 16, "msa_heads": 4, "msa_hidden": 8, "pair_heads": 2, "pair_hidden": 8,
    "tri_mul_hidden": 16, "opm_hidden": 8, "ipa_heads": 4, "ipa_hidden": 8, "resnet_hidden": 16, "lddt_hidden": 16,
    "msa_depth": 8, "extra_msa_depth": 16, "recycles": 1,
    "trace_shape": [4, 16], "validation_shapes": [[6, 24, 0, 0], [3, 20, 2, 4]],
    "variant_chunk_size": 4,
}
# model_3_ptm at AlphaFold2's real shapes (48 blocks, c_m 256, c_z 128); MSA depths as in
# AlphaFold's inference (512 clusters, 5120 extra rows), trimmed to what an alignment has.
_DEFAULT = {
    "openfold_preset": "model_3_ptm", "msa_depth": 512, "extra_msa_depth": 5120, "recycles": 3,
    "trace_shape": [4, 16], "validation_shapes": [[6, 24, 0, 0], [3, 20, 2, 4]],
    "variant_chunk_size": 64, "variant_attn_chunk_size": 4,
}
CONFIGS = {"tiny": _TINY, "default": _DEFAULT}
COMMON = {"precision": "fp32", "chunk_size": None, "attn_chunk_size": None, "storage": "fp32"}

NAMES_IN = ("m", "z", "msa_mask", "pair_mask")
NAMES_OUT = ("m_out", "z_out", "s")
DYNAMIC = {"m": {0: "S", 1: "N"}, "z": {0: "N", 1: "N"}, "msa_mask": {0: "S", 1: "N"},
           "pair_mask": {0: "N", 1: "N"}, "m_out": {0: "S", 1: "N"}, "z_out": {0: "N", 1: "N"}, "s": {0: "N"}}
STORAGES = ("fp32", "fp16")


def _cfg(config: Mapping[str, Any] | None) -> dict:
    config = dict(config or {})
    preset = config.get("preset", "default")
    return {**COMMON, **CONFIGS.get(preset, _DEFAULT), **config}


def trunk_settings(cfg: Mapping[str, Any]) -> dict:
    """Resolve a config (plus a variant's export_config) to the trunk's settings: the compute
    precision of the graphs, and the host loop's chunk sizes (rows per call of the transitions,
    projections and triangle-multiplication tiles; rows per call of the attentions) and the
    storage precision of m, z and the projection stores between calls."""
    from xopt.errors import UserError

    chunk = cfg.get("chunk_size")
    if cfg.get("chunked") and not chunk:
        chunk = cfg["variant_chunk_size"]
    attn = cfg.get("attn_chunk_size") or (cfg.get("variant_attn_chunk_size") if cfg.get("chunked") else None)
    storage = cfg.get("storage") or "fp32"
    if storage not in STORAGES:
        raise UserError(f"unknown storage {storage!r} for openfold", f"use one of {', '.join(STORAGES)}")
    return {"precision": cfg.get("precision", "fp32"), "chunk_size": int(chunk) if chunk else None,
            "attn_chunk_size": int(attn) if attn else (int(chunk) if chunk else None), "storage": storage}


def build(checkpoint=None, config=None, seed: int = 0) -> Built:
    from xopt.models.openfold.graphs import meta
    from xopt.models.openfold.inputs import make_feeds, model_for
    from xopt.models.openfold.trunk import check_finite, make_trunk

    cfg = _cfg(config)
    settings = trunk_settings(cfg)
    net_cfg = {**cfg, "low_prec": cfg.get("low_prec", settings["precision"] == "fp16")}
    model, of_cfg, info = model_for(net_cfg, seed, str(checkpoint) if checkpoint else None)
    # the main graph never chunks (a traced chunk loop is wrong at other shapes): chunking is
    # the host loop's, over the op graphs
    trunk = make_trunk(model.evoformer, {"precision": settings["precision"]})
    settings["graph_meta"] = meta(model, of_cfg)
    if settings["precision"] != "fp32":
        import torch

        # a precision that overflows fails here, naming the module, rather than as a parity number
        feed = make_feeds(cfg, [_trace_shape(cfg)], seed=seed, weights_seed=seed, checkpoint=info.get("path"))[0]
        check_finite(trunk, [torch.from_numpy(feed[k]) for k in NAMES_IN], f"openfold trunk ({settings['precision']})")
    weights = Weights(kind=info["kind"], seed=info.get("seed"), path=info.get("path"), sha256=info.get("sha256"),
                      note=info.get("note", ""))
    return Built(module=trunk, weights=weights, config=cfg, settings=settings,
                 extra={"model": model, "openfold_config": of_cfg})


def _trace_shape(cfg) -> tuple[int, int, int, int]:
    s, n = cfg["trace_shape"]
    return (s, n, 0, 0)


def _feeds(built: Built, shapes, seed: int) -> list[dict]:
    from xopt.models.openfold.inputs import make_feeds

    return make_feeds(built.config, shapes, seed=seed, weights_seed=built.weights.seed or 0,
                      checkpoint=built.weights.path)


def example_inputs(built: Built) -> dict:
    return _feeds(built, [_trace_shape(built.config)], seed=0)[0]


def validation_inputs(built: Built) -> list[dict]:
    return _feeds(built, [tuple(s) for s in built.config["validation_shapes"]], seed=1)


def calibration_inputs(built: Built, n: int):
    s, n_res = built.config["trace_shape"]
    return _feeds(built, [(s, n_res, 0, 0)] * n, seed=2)


def profile_inputs(targets: Mapping[str, Any], n: int, seed: int) -> list[dict]:
    """`targets`: the profile's openfold targets; the profiler adds "config" (and may add
    "weights") from the manifest so the feeds match the exported network. Sizes stay within
    `profile_max_residues` (default 64; profiling runs on the host) and the config's MSA depth."""
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
    """(max residues, max MSA rows) of sample inputs: the profiling cap and the MSA depth."""
    return int(targets.get("profile_max_residues", 64)), int(cfg["msa_depth"])


def describe_inputs(targets: Mapping[str, Any], shapes) -> dict:
    s, n = shapes["m"][:2]
    return {"text": f"{n} residues x {s} MSA rows", "residues": n, "msa_rows": s}


def budget_checks(targets: Mapping[str, Any], result: Mapping[str, Any]) -> list[dict]:
    """Seconds per prediction (one end-to-end fold, recycling included) against the target."""
    limit = targets.get("seconds_per_prediction")
    e2e = result.get("latency_e2e_ms") or {}
    if not limit or not e2e.get("p50"):
        return []
    seconds = e2e["p50"] / 1e3
    return [{"name": "time per prediction [this host, profiling length]", "timing": True,
             "passed": seconds <= float(limit),
             "value": round(seconds, 2), "limit": float(limit), "unit": "s"}]


# measured at real shapes with seeded weights (N=20-24): FP16 max 5e-3 / mean 7e-4 on z_out;
# BF16 (torch, N=48-64) max 0.38 / mean 0.024. Bounds leave ~10x (FP16) and ~2x (BF16) margin.
_FP16_TOL = Tolerance(max_abs=0.1, mean_abs=5e-3)
_BF16_TOL = Tolerance(max_abs=1.0, mean_abs=5e-2)
# ONNX Runtime's CPU arena keeps each session's peak: with one session per graph the peaks add up
_ORT = {"enable_cpu_mem_arena": False}
_CHUNKED = "host-driven chunk loop over the op graphs (variant_chunk_size rows, variant_attn_chunk_size attention rows)"
VARIANTS = {
    "fp32": Variant("fp32", "fp32", tolerance=Tolerance(max_abs=1e-3), ort_options=_ORT,
                    description="FP32 graphs, dynamic S and N"),
    "bf16": Variant("bf16", "bf16", tolerance=_BF16_TOL, export_config={"precision": "bf16"}, ort_options=_ORT,
                    description="BF16 stacks, FP32 islands (layer norms, attention logits, outer product, "
                                "triangle reduction); needs BF16 kernels (CUDA/TensorRT EP, not ORT CPU)"),
    "fp16": Variant("fp16", "fp16", tolerance=_FP16_TOL, export_config={"precision": "fp16"}, ort_options=_ORT,
                    description="FP16 stacks with OpenFold's low_prec (inf 1e4, eps 1e-4) and FP32 islands"),
    # the gated FP16 trunk: the main graph alone (its units are the Evoformer blocks), judged by
    # Cα RMSD after folding both trunks with the same structure module
    "fp16-gated": Variant("fp16-gated", "fp16", tolerance=_FP16_TOL, passes=(("fp16-gated", {"gate_samples": 1}),),
                          ort_options=_ORT, with_graphs=False,
                          description="FP16 Evoformer trunk (main graph only) whose blocks that move Cα RMSD past "
                                      "the gate stay FP32"),
    "fp32-chunk": Variant("fp32-chunk", "fp32", tolerance=Tolerance(max_abs=1e-3), ort_options=_ORT,
                          export_config={"precision": "fp32", "chunked": True}, description=f"FP32, {_CHUNKED}"),
    "fp16-chunk": Variant("fp16-chunk", "fp16", tolerance=_FP16_TOL, ort_options=_ORT,
                          export_config={"precision": "fp16", "chunked": True},
                          description=f"FP16 + FP32 islands, {_CHUNKED}"),
    "bf16-chunk": Variant("bf16-chunk", "bf16", tolerance=_BF16_TOL, ort_options=_ORT,
                          export_config={"precision": "bf16", "chunked": True},
                          description=f"BF16 + FP32 islands, {_CHUNKED} (GPU EPs)"),
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
    covers="evoformer trunk; with its graphs the whole model (embedders, extra-MSA and Evoformer ops, structure "
           "module, heads; recycling on the host)",
    graphs="xopt.models.openfold.graphs:graphs",
    precision_group="xopt.models.openfold.precision:group",
    assemble="xopt.models.openfold.session:assemble",
    drift_keys=("ca_rmsd", "lddt_ca", "gdt_ts", "plddt_mean_abs_diff", "pair_rel_err"),
    higher_is_better=("lddt_ca", "gdt_ts"),
    # C-alpha RMSD within 3x the noise floor, or below 0.1 A (a tenth of a bond-length error)
    gate=DriftGate("ca_rmsd", higher_is_better=False, noise_multiple=3.0, limit=0.1, unit=" Å"),
    shape_flags=(ShapeFlag("residues", "residues", int, "chain length N", as_list=True),
                 ShapeFlag("msa-rows", "msa_rows", int, "MSA rows S")),
    describe_inputs="xopt.models.openfold:describe_inputs",
    previews="xopt.models.openfold.preview:previews",  # pLDDT, Cα distance maps and 3D views, FP32 beside variant
    drift_units={"ca_rmsd": "Å", "lddt_ca": "0–1", "gdt_ts": "0–1", "plddt_mean_abs_diff": "pLDDT points, 0–100",
                 "pair_rel_err": "relative, ‖Δz‖/‖z‖"},
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
