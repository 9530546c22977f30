"""OpenFold model construction for xopt: configs, representative seeded weights, checkpoints.

xopt configs are flat JSON-able dicts (they go into manifests); `openfold_config` turns one
into OpenFold's ml_collections config. Torch and OpenFold are imported inside functions.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from xopt.errors import UserError

# Real AlphaFold2 shapes come from OpenFold's preset; only the keys a config sets are changed.
NETWORK_KEYS = ("evoformer_blocks", "extra_msa_blocks", "structure_blocks", "c_m", "c_z", "c_s", "c_e",
                "msa_heads", "msa_hidden", "pair_heads", "pair_hidden", "tri_mul_hidden", "opm_hidden",
                "ipa_heads", "ipa_hidden", "resnet_hidden", "lddt_hidden")
PRECISIONS = ("fp32", "bf16", "fp16")


def openfold_config(cfg: Mapping[str, Any]):
    """OpenFold's ml_collections config for an xopt config dict (see openfold.py CONFIGS)."""
    from xopt.models.openfold.cpu import import_openfold

    import_openfold()
    from openfold.config import model_config

    precision = cfg.get("precision", "fp32")
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r} for openfold", f"choose one of {', '.join(PRECISIONS)}")
    preset = cfg.get("openfold_preset", "model_3_ptm")
    try:
        # FP16 turns the 1e9 mask biases into -inf (NaN rows once padded): OpenFold's low_prec
        # switches inf to 1e4 and eps to 1e-4 everywhere.
        c = model_config(preset, low_prec=bool(cfg.get("low_prec", precision == "fp16")))
    except ValueError as exc:
        raise UserError(f"unknown OpenFold preset {preset!r}", "use a no-template preset such as model_3_ptm") from exc
    if c.model.template.enabled:
        raise UserError(f"OpenFold preset {preset} needs template features", "use model_3_ptm, model_4_ptm or model_5_ptm")
    g, evo, ext = c.globals, c.model.evoformer_stack, c.model.extra_msa.extra_msa_stack
    sm, heads = c.model.structure_module, c.model.heads
    # c_m/c_z/c_s/c_e are FieldReferences shared by every sub-config: set them once.
    for key in ("c_m", "c_z", "c_s", "c_e"):
        if key in cfg:
            g[key] = int(cfg[key])
    setters = {
        "evoformer_blocks": [(evo, "no_blocks")],
        "extra_msa_blocks": [(ext, "no_blocks")],
        "structure_blocks": [(sm, "no_blocks")],
        "msa_heads": [(evo, "no_heads_msa"), (ext, "no_heads_msa")],
        "msa_hidden": [(evo, "c_hidden_msa_att"), (ext, "c_hidden_msa_att")],
        "pair_heads": [(evo, "no_heads_pair"), (ext, "no_heads_pair")],
        "pair_hidden": [(evo, "c_hidden_pair_att"), (ext, "c_hidden_pair_att")],
        "tri_mul_hidden": [(evo, "c_hidden_mul"), (ext, "c_hidden_mul")],
        "opm_hidden": [(evo, "c_hidden_opm"), (ext, "c_hidden_opm")],
        "ipa_heads": [(sm, "no_heads_ipa")],
        "ipa_hidden": [(sm, "c_ipa")],
        "resnet_hidden": [(sm, "c_resnet")],
        "lddt_hidden": [(heads.lddt, "c_hidden")],
    }
    for key, targets in setters.items():
        if key in cfg:
            for node, attr in targets:
                node[attr] = int(cfg[key])
    c.data.common.max_recycling_iters = int(cfg.get("recycles", 3))
    c.data.predict.max_msa_clusters = int(cfg.get("msa_depth", 512))
    c.data.predict.max_extra_msa = int(cfg.get("extra_msa_depth", 1024))
    # xopt controls chunking itself; OpenFold's tuner treats any RuntimeError as OOM and on CPU
    # never fails, i.e. silently picks "no chunking".
    evo.tune_chunk_size = False
    ext.tune_chunk_size = False
    # `ckpt: blocks_per_ckpt is not None` is evaluated on the FieldReference object, so it is
    # always True; inference never wants activation checkpointing.
    ext.ckpt = False
    g.chunk_size = cfg.get("chunk_size")
    g.use_lma = bool(cfg.get("lma", False))
    return c


def seed_everything(seed: int) -> None:
    """OpenFold's initialisers draw from torch and from scipy's truncnorm (numpy's global RNG)."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def representative_init_(model, seed: int, scale: float = 0.1) -> int:
    """Re-draw the Linear layers OpenFold zero-initialises ("final": W=0, b=0; "gating": W=0, b=1).

    Left at zero, every residual update and the structure module's backbone update vanish:
    the network is close to an identity map, every C-alpha sits at the origin and any drift
    measurement is trivially zero. Weights become N(0, (scale/sqrt(fan_in))^2); biases stay.
    Returns how many layers were re-drawn.
    """
    import torch

    gen = torch.Generator().manual_seed(int(seed) + 7919)
    count = 0
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.Linear) and not torch.any(mod.weight):
                fan_in = mod.weight.shape[1]
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=gen) * (scale / fan_in ** 0.5))
                count += 1
    return count


def build_alphafold(cfg: Mapping[str, Any], seed: int = 0, checkpoint: str | Path | None = None):
    """(AlphaFold module in eval mode on CPU, OpenFold config, weights provenance dict)."""
    of_cfg = openfold_config(cfg)
    from openfold.model.model import AlphaFold

    seed_everything(seed)
    model = AlphaFold(of_cfg)
    if checkpoint:
        info = load_checkpoint_(model, checkpoint, cfg.get("openfold_preset", "model_3_ptm"))
    else:
        redrawn = representative_init_(model, seed)
        info = {"kind": "seeded-random", "seed": int(seed),
                "note": f"OpenFold init, {redrawn} zero-initialised final/gating Linear layers re-drawn "
                        "N(0, (0.1/sqrt(fan_in))^2)"}
    model.eval()
    model.requires_grad_(False)
    return model, of_cfg, info


def load_checkpoint_(model, path: str | Path, preset: str) -> dict:
    """OpenFold `.pt` state dicts (plain, `ema.params`, Lightning `state_dict` with `model.`) or
    AlphaFold JAX `.npz` parameters through OpenFold's importer."""
    import torch

    from xopt.hashing import sha256_file

    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist", "pass the path of an OpenFold .pt or AlphaFold .npz file")
    if path.suffix == ".npz":
        from openfold.utils.import_weights import import_jax_weights_

        stem = path.stem  # AlphaFold names them params_model_3_ptm.npz
        version = stem.split("params_", 1)[1] if stem.startswith("params_") else preset
        if version != preset:
            raise UserError(f"{path.name} holds {version} parameters but the config uses {preset}",
                            f"build with openfold_preset={version} or pass params for {preset}")
        try:
            import_jax_weights_(model, str(path), version=version)
        except (AssertionError, KeyError, ValueError, RuntimeError) as exc:
            raise UserError(f"{path.name} does not match the {preset} network ({type(exc).__name__}: {exc})",
                            "use the 'default' config (real AlphaFold2 shapes) with JAX parameters") from exc
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle errors come in many types
            raise UserError(f"cannot read {path} as a PyTorch checkpoint ({exc})",
                            "pass an OpenFold .pt state dict or an AlphaFold .npz") from exc
        state = _unwrap_state(state)
        missing, unexpected = _load_state(model, state)
        if missing or unexpected:
            raise UserError(f"{path.name} does not match the network ({len(missing)} missing keys, e.g. "
                            f"{missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]})",
                            "use the 'default' config (real AlphaFold2 shapes) for OpenFold's released weights")
    return {"kind": "checkpoint", "path": str(path), "sha256": sha256_file(path)}


def _unwrap_state(state):
    if isinstance(state, dict) and "ema" in state and isinstance(state["ema"], dict) and "params" in state["ema"]:
        state = state["ema"]["params"]
    elif isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise UserError("checkpoint holds no state dict", "pass an OpenFold .pt parameter file")
    for prefix in ("module.", "model."):
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _load_state(model, state):
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    bad = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if not missing and not unexpected and not bad:
        model.load_state_dict(state, strict=True)
    return missing + bad, unexpected

