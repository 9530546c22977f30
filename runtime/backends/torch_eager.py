"""The PyTorch eager backend: rebuilds the model from its spec and weights provenance.

It is the reference the other backends are measured against, so it runs exactly the
module the exporter traced.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from xopt.errors import UserError
from xopt.runtime.backends.base import Backend, Session, register_backend


class TorchSession(Session):
    """`path` is an export directory or manifest; `built=` and `spec=` skip the rebuild."""

    backend = "torch"

    def _load(self, path, built=None, spec=None, device="cpu", **_ignored):
        import torch

        if built is None:
            built, spec = build_from_manifest(path)
        self.built = built
        self.device = torch.device(device)
        self.module = built.module.to(self.device).eval()
        self.input_names = list(spec.input_names)
        self.output_names = list(spec.output_names)
        self.providers = [f"torch-{self.device.type}"]

    def _run(self, feeds):
        return torch_outputs(self.module, feeds, self.output_names, self.device)

    def _close(self):
        self.module = None


def torch_outputs(module, feed: Mapping[str, np.ndarray], output_names, device=None) -> dict[str, np.ndarray]:
    """The module's outputs on `feed` as float32 numpy; inputs go to `device` (the module's),
    where a CUDA module needs them."""
    import torch

    args = [torch.from_numpy(np.ascontiguousarray(v)) for v in feed.values()]
    if device is not None:
        args = [a.to(device) for a in args]
    with torch.inference_mode():
        out = module(*args)
    if isinstance(out, torch.Tensor):
        out = (out,)
    elif isinstance(out, dict):
        out = tuple(out[n] for n in output_names)
    if len(out) != len(output_names):
        raise ValueError(f"module returned {len(out)} outputs, the spec names {len(output_names)}")
    return {n: t.detach().float().cpu().numpy() for n, t in zip(output_names, out)}


def build_from_manifest(path):
    """Rebuild the PyTorch model a manifest was exported from (same config, same weights)."""
    from xopt.manifest import load
    from xopt.registry import get_model

    manifest = load(path)
    spec = get_model(manifest.model)
    w = manifest.weights
    if w.get("kind") == "checkpoint":
        ckpt = w.get("path")
        if not ckpt or not Path(ckpt).exists():
            raise UserError(f"the checkpoint {ckpt} this export was built from is gone",
                            "restore it or re-export with --checkpoint")
    elif w.get("kind") == "seeded-random":
        ckpt = None
    else:
        raise UserError(f"the torch backend cannot rebuild weights of kind {w.get('kind')!r}",
                        "profile this export with an ONNX backend")
    return spec.build(checkpoint=ckpt, config=manifest.config, seed=w.get("seed") or 0), spec


def _probe():
    try:
        import torch
    except ImportError:
        return False, "torch is not installed"
    return True, f"torch {torch.__version__}"


register_backend(Backend("torch", TorchSession, _probe, "torch", "PyTorch eager (the FP32 reference)"))
