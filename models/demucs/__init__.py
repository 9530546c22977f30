"""Demucs / HTDemucs music source separation (PyPI `demucs` architectures).

The graph is the real-valued core between demucs' STFT and iSTFT (see core.py);
normalisation, STFT/iSTFT, masking and overlap-add run on the host in numpy
(xopt.models.demucs.pipeline) with demucs' numerics. Importable without torch.
"""
from __future__ import annotations

from typing import Any, Mapping

from xopt.registry import register
from xopt.models.demucs import pipeline as host
from xopt.spec import EvalHooks
from xopt.spec import Built, DriftGate, FitHooks, ModelSpec, ShapeFlag, Tolerance, Variant, Weights

SOURCES = ["drums", "bass", "other", "vocals"]
_COMMON = {"sources": SOURCES, "audio_channels": 2, "samplerate": 44100}

# htdemucs: the project config's `htdemucs` section with the MMI grid overrides
# (dconv_mode=3, depth=4, t_layers=5, bottom_channels=512) and segment 7.8 s -> 41.98 M params.
_HTDEMUCS = {**_COMMON, "channels": 48, "growth": 2, "nfft": 4096, "depth": 4, "rewrite": True,
             "freq_emb": 0.2, "emb_scale": 10, "emb_smooth": True, "kernel_size": 8, "stride": 4,
             "time_stride": 2, "context": 1, "context_enc": 0, "norm_starts": 4, "norm_groups": 4,
             "dconv_mode": 3, "dconv_depth": 2, "dconv_comp": 8, "dconv_init": 1e-3,
             "bottom_channels": 512, "t_layers": 5, "t_heads": 8, "t_hidden_scale": 4.0,
             "t_dropout": 0.02, "t_emb": "sin", "t_norm_first": True, "t_norm_out": True,
             "t_layer_scale": True, "t_gelu": True, "cac": True, "rescale": 0.1, "segment": 7.8}
# hdemucs_mmi (Hybrid Demucs v3): the project config's `hdemucs` section.
_HDEMUCS = {**_COMMON, "channels": 48, "growth": 2, "nfft": 4096, "depth": 6, "rewrite": True,
            "hybrid": True, "hybrid_old": False, "cac": True, "freq_emb": 0.2, "emb_scale": 10,
            "emb_smooth": True, "kernel_size": 8, "stride": 4, "time_stride": 2, "context": 1,
            "context_enc": 0, "norm_starts": 4, "norm_groups": 4, "dconv_mode": 1, "dconv_depth": 2,
            "dconv_comp": 4, "dconv_attn": 4, "dconv_lstm": 4, "dconv_init": 1e-3, "rescale": 0.1}
# demucs (v2, time domain): the repro grid's v2 baseline (2 BiLSTM layers, no DConv, ReLU).
_DEMUCS_V2 = {**_COMMON, "channels": 64, "growth": 2.0, "depth": 6, "rewrite": True, "lstm_layers": 2,
              "kernel_size": 8, "stride": 4, "context": 1, "gelu": False, "glu": True, "norm_starts": 4,
              "norm_groups": 4, "dconv_mode": 0, "normalize": False, "resample": True, "rescale": 0.1}

CONFIGS: dict[str, dict[str, Any]] = {
    # segment None: the model's own (HTDemucs always runs at its training length)
    "htdemucs": {"arch": "htdemucs", "kwargs": _HTDEMUCS, "segment": None, "batch": 1},
    "hdemucs_mmi": {"arch": "hdemucs", "kwargs": _HDEMUCS, "segment": 7.8, "batch": 1},
    "demucs": {"arch": "demucs", "kwargs": _DEMUCS_V2, "segment": 7.8, "batch": 1},
    # CI-sized HTDemucs: same structure (both branches, DConv, cross-transformer), 0.5 s
    "tiny": {"arch": "htdemucs", "segment": None, "batch": 1,
             "kwargs": {**_COMMON, "channels": 8, "depth": 3, "nfft": 4096, "dconv_mode": 3, "dconv_comp": 4,
                        "bottom_channels": 32, "t_layers": 2, "t_heads": 4, "segment": 0.5}},
    "tiny-hdemucs": {"arch": "hdemucs", "segment": 0.5, "batch": 1,
                     "kwargs": {**_COMMON, "channels": 4, "depth": 5, "dconv_mode": 1, "dconv_attn": 4,
                                "dconv_lstm": 4}},
    "tiny-demucs": {"arch": "demucs", "segment": 0.5, "batch": 1,
                    "kwargs": {**_COMMON, "channels": 8, "depth": 3, "lstm_layers": 1, "dconv_mode": 0,
                               "gelu": False, "normalize": False}},
}
LAYER_SCALE_RANGE = (0.2, 1.0)

# FP16: the input statistics (mean/std over a whole segment, 1e4-1e6 elements: in pure FP16
# the sum of squares of a loud segment overflows) stay FP32 through the pass's prologue option.
# Positional embeddings are constants (export patcher); trigonometry that is still traced
# (other embedding kinds) stays FP32 too: FP16 phases of positions ~1e3 are off by radians.
FP16_OPTIONS = {"fp32_prologue": True, "op_block_list": ["Sin", "Cos", "Pow", "Exp"]}

VARIANTS = {
    # htdemucs, 7.8 s, ORT CPU vs torch: max_abs 7e-4, mean_abs 7e-7, SDR 99 dB (worst stem)
    # onnxslim folds the exporter's reshape/transpose chains: ~9% faster on ORT CPU, same numbers
    "fp32": Variant("fp32", "fp32", passes=(("slim", {}),), tolerance=Tolerance(max_abs=5e-3, mean_abs=2e-5),
                    description="FP32 core (ONNX Runtime); parity SDR ~100 dB"),
    # htdemucs, 7.8 s, ORT CPU: max_abs 0.71, mean_abs 7e-4, SDR 40 dB (worst stem)
    "fp16": Variant("fp16", "fp16", passes=(("fp16", FP16_OPTIONS),),
                    tolerance=Tolerance(max_abs=2.0, mean_abs=5e-3),
                    description="FP16 weights/activations, FP32 I/O, input statistics in FP32 (~40 dB SDR)",
                    # ORT CPU's NchwcTransformer (ORT_ENABLE_ALL only) crashes on this FP16 graph:
                    # extended optimisation skips the layout transformers.
                    ort_options={"graph_optimization_level": "extended"}),
    # htdemucs, 7.8 s: max_abs 0.22, mean_abs 1e-3, SDR 45 dB (worst stem). 7-bit weights: on an
    # AVX2 CPU without VNNI ONNX Runtime's u8s8 MatMulInteger saturates (tiny config, AMD EPYC
    # AVX2: worst stem 42.3 dB with 8-bit weights, 67.6 dB with reduce_range)
    # The gated passes run on the raw export: onnxslim drops the module paths the groups are read from.
    # Both gates are the profile's (worst-stem SDR >= 30 dB, or within 3x the noise floor) on the
    # device profile's inputs, so an export that passes is a variant the profile passes.
    "int8": Variant("int8", "int8",
                    passes=(("int8-gated", {"mode": "dynamic", "op_types": ["MatMul", "Gemm"], "reduce_range": True,
                                            "gate_samples": 1, "named_groups_only": True,
                                            # ranking 10 layers when none must fall back cost 12 min at full
                                            # size on 2 cores: rank only when the all-INT8 build misses
                                            "localise": "on-failure"}), ("slim", {})),
                    tolerance=Tolerance(max_abs=1.0, mean_abs=5e-3),
                    description="dynamic INT8 of the transformer's MatMul/Gemm behind the worst-stem SDR gate: "
                                "transformer layers that miss it stay FP32"),
    "int8-static": Variant("int8-static", "int8",
                           passes=(("int8-gated", {"op_types": ["Conv", "ConvTranspose"], "calib_samples": 2,
                                                   "gate_samples": 1, "localise": "on-failure"}),),
                           tolerance=Tolerance(),
                           description="static QDQ INT8 convolutions behind the worst-stem SDR gate: the encoder/"
                                       "decoder layers that miss it stay FP32"),
}


def _resolve(config) -> dict:
    if config is None or isinstance(config, str):
        return SPEC.config(config)
    config = dict(config)
    if "preset" in config and "arch" in config:
        return config
    return SPEC.config(config.pop("preset", None), config)


def build(checkpoint=None, config=None, seed: int = 0) -> Built:
    from xopt.models.demucs import core

    cfg = _resolve(config)
    if checkpoint:
        from xopt.models.demucs import checkpoint as _demucs_ckpt
        from xopt.hashing import sha256_file

        model, arch, info = _demucs_ckpt.load(checkpoint)
        cfg = {**cfg, "preset": "checkpoint", "arch": arch, "kwargs": _jsonable(info["kwargs"])}
        weights = Weights("checkpoint", path=str(checkpoint), sha256=sha256_file(checkpoint),
                          note=f"dropped kwargs: {info['dropped_kwargs']}" if info["dropped_kwargs"] else "")
    else:
        model = core.instantiate(cfg["arch"], cfg["kwargs"], seed)
        lo, hi = cfg.get("layer_scale", LAYER_SCALE_RANGE)
        counts = core.make_representative(model, seed, lo, hi)
        weights = Weights("seeded-random", seed=seed,
                          note=f"LayerScale drawn in [{lo}, {hi}] ({counts['transformer']} transformer, "
                               f"{counts['dconv']} DConv) so every branch contributes")
    _set_segment(model, cfg)
    module = core.wrap(model)
    shapes = core.core_shapes(model)
    derived = {"arch": core.arch_of(model), "sources": list(model.sources), "samplerate": int(model.samplerate),
               "audio_channels": int(model.audio_channels), "nfft": int(getattr(model, "nfft", 4096)),
               "segment_samples": shapes["mix"][-1], "segment_seconds": shapes["mix"][-1] / model.samplerate,
               "spectral": core.arch_of(model) != "demucs",
               "parameters": int(sum(p.numel() for p in model.parameters()))}
    return Built(module=module, weights=weights, config={**cfg, **derived}, extra={"model": model})


def _set_segment(model, cfg) -> None:
    from xopt.errors import UserError
    from xopt.models.demucs.core import arch_of, as_fraction

    seconds = cfg.get("segment")
    if seconds is None:
        if arch_of(model) != "htdemucs":
            model.segment = as_fraction(7.8)
        return
    seconds = as_fraction(seconds)
    if seconds <= 0:
        raise UserError(f"segment must be positive, got {float(seconds)}", "pass e.g. segment=7.8")
    if arch_of(model) == "htdemucs" and seconds > as_fraction(model.segment):
        raise UserError(f"HTDemucs was trained on {float(model.segment):g} s segments; {float(seconds):g} s is longer",
                        f"use a segment of at most {float(model.segment):g} s")
    model.segment = seconds


def _jsonable(value):
    from fractions import Fraction

    if isinstance(value, Fraction):
        return float(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _feed(built: Built, batch: int, seed: int) -> dict:
    c = built.config
    return host.segment_feed(c["segment_samples"], batch, seed, c["nfft"], c["spectral"], c["audio_channels"],
                             c["samplerate"])


def example_inputs(built: Built) -> dict:
    return _feed(built, 2, 0)  # batch >= 2 keeps the batch dimension dynamic in the dynamo export


def validation_inputs(built: Built) -> list[dict]:
    feeds = [_feed(built, 1, 1)]
    if built.config["segment_samples"] <= 3 * built.config["samplerate"]:
        feeds.append(_feed(built, 3, 2))
    return feeds


def calibration_inputs(built: Built, n: int) -> list[dict]:
    return [_feed(built, 1, 100 + i) for i in range(n)]


def budget_checks(targets: Mapping[str, Any], result: Mapping[str, Any]) -> list[dict]:
    """Real-time factor of a whole track (the end-to-end run over the pipeline's synthetic
    tracks) against the profile's `real_time_factor` target."""
    e2e = (result.get("latency_e2e_ms") or {}).get("p50")
    if not e2e or "real_time_factor" not in targets:
        return []
    rtf = host.track_seconds(targets) / (e2e / 1e3)
    return [{"name": "real-time factor, whole track [this machine]", "timing": True,
             "passed": rtf >= targets["real_time_factor"],
             "value": round(rtf, 3), "limit": targets["real_time_factor"], "unit": "x"}]


def describe_inputs(targets: Mapping[str, Any], shapes) -> dict:
    batch, _, samples = shapes["mix"]
    rate = int((targets.get("config") or {}).get("samplerate", 44100))
    return {"text": f"{samples / rate:.2f} s segment x batch {batch}", "segment_seconds": samples / rate,
            "batch": batch}


def shrink(targets: Mapping[str, Any]) -> dict | None:
    """Half the batch of segments per call (the exported graph fixes the segment length)."""
    batch = int(targets.get("batch") or 1)
    return None if batch <= 1 else {**targets, "batch": batch // 2}


SPEC = register(ModelSpec(
    name="demucs",
    task="separation",
    build=build,
    input_names=["mix", "spec"],
    output_names=["spec_out", "wave_out"],
    dynamic_axes={"mix": {0: "batch"}, "spec": {0: "batch"}, "spec_out": {0: "batch"}, "wave_out": {0: "batch"}},
    example_inputs=example_inputs,
    validation_inputs=validation_inputs,
    variants=VARIANTS,
    calibration_inputs=calibration_inputs,
    drift=host.drift,
    perturb=host.perturb,
    profile_inputs=host.profile_inputs,
    pipeline="xopt.models.demucs.pipeline:SeparationPipeline",
    opset=18,
    exporter="dynamo",
    # export-time context managers, by reference: this module imports without torch
    patchers=tuple(f"xopt.models.demucs.patch:{name}" for name in
                   ("no_mha_fastpath", "precise_reductions", "fusable_gelu", "constant_positional_embeddings")),
    configs=CONFIGS,
    default_config="htdemucs",
    covers="real-valued core (mix, CaC spectrogram) -> (spectral CaC output, time-branch output); "
           "normalisation, STFT/iSTFT and overlap-add run on the host",
    drift_keys=("sdr_mean_db", "sdr_min_db"),
    higher_is_better=("sdr_mean_db", "sdr_min_db"),
    # worst stem's SDR against the FP32 output: within 3x the noise floor (the floor minus 9.5 dB)
    # or at least 30 dB, where the difference is far below what the separation itself leaves
    gate=DriftGate("sdr_min_db", higher_is_better=True, noise_multiple=3.0, limit=30.0, unit=" dB", db=True,
                   nominal=9.0),  # --max-drop: dB of SDR lost by a model scoring ~9 dB on MUSDB
    precision_group="xopt.models.demucs.precision:group",
    shape_flags=(ShapeFlag("batch", "batch", int, "segments per call (default 1)"),
                 ShapeFlag("segment", "segment_request", float,
                           "segment seconds; must match the export's graph (xopt export demucs --chunk SECONDS)")),
    describe_inputs=describe_inputs,
    previews="xopt.models.demucs.preview:previews",
    drift_units={"sdr_mean_db": "dB, mean over stems", "sdr_min_db": "dB, worst stem"},
    budget_checks=budget_checks,
    packages=("demucs",),
    shrink=shrink,
    # xopt eval: museval BSS Eval v4 SDR per stem on MUSDB18-HQ; label-free mixture/rate/clipping/loudness checks
    evaluation=EvalHooks(
        dataset="xopt.models.demucs.eval_data:read_dataset", predict="xopt.models.demucs.evaluate:predict",
        score="xopt.models.demucs.evaluate:score", aggregate="xopt.models.demucs.evaluate:aggregate",
        prediction_paths="xopt.models.demucs.evaluate:prediction_paths",
        read_prediction="xopt.models.demucs.evaluate:read_prediction",
        item_checks="xopt.models.demucs.evaluate:item_checks", checks="xopt.models.demucs.checks:checks",
        run_checks="xopt.models.demucs.checks:run_checks",
        metrics={"sdr": "higher", **{f"sdr_{s}": "higher" for s in SOURCES}, "sdr_plain": "higher",
                 "sir": "higher", "sar": "higher", "isr": "higher"},
        options={"subset": "train or test, when DATA is the MUSDB18-HQ root (default test)",
                 "seconds": "score the first S seconds of each track (default: whole tracks)",
                 "sdr": "museval (BSS Eval v4, the default) or plain (the fast whole-track SDR only)"}),
    fit=FitHooks(search="xopt.models.demucs.budget:fit_to_budget", chunk="xopt.models.demucs.budget:chunk_options"),
))
