"""Real Demucs checkpoints in their two upstream formats, loaded without executing pickles.

- `.th` packages written by `demucs.states.serialize_model` (+ `save_with_checksum`): a
  pickled dict {klass, args, kwargs, state, training_args?}. `torch.load(weights_only=True)`
  refuses the class object and the `Fraction` segment; exactly those globals (the three
  demucs model classes and fractions.Fraction) are allowlisted for the one load.
- safetensors files read by `demucs.hf.load_safetensors_model`: tensors = state, metadata
  {klass: "module.Class", args/kwargs: JSON with fractions as {"_type": "fraction", ...}}.
  Only the three known classes are accepted; nothing is imported by name from the file.
"""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

from xopt.errors import UserError

_HF_CLASS = {"demucs.htdemucs.HTDemucs": "htdemucs", "demucs.hdemucs.HDemucs": "hdemucs",
             "demucs.demucs.Demucs": "demucs"}


def _decode(value):
    if isinstance(value, dict):
        if value.get("_type") == "fraction":
            return Fraction(int(value["numerator"]), int(value["denominator"]))
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _bad(path, why: str) -> UserError:
    return UserError(f"{path} is not a Demucs checkpoint xopt can read ({why})",
                     "pass a single-model .th file written by demucs.states or a demucs safetensors file")


def read_th(path: Path) -> tuple[str, tuple, dict, dict]:
    import pickle

    import torch

    from xopt.models.demucs.core import model_classes

    classes = model_classes()
    try:
        with torch.serialization.safe_globals([*classes.values(), Fraction]):
            package = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).split("\n")[0][:200]
        raise _bad(path, f"weights_only load refused it: {first}") from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise _bad(path, str(exc).split("\n")[0][:200]) from exc
    if not isinstance(package, dict) or not {"klass", "kwargs", "state"} <= set(package):
        raise _bad(path, "no klass/kwargs/state package inside")
    arch = {v: k for k, v in classes.items()}.get(package["klass"])
    if arch is None:
        raise _bad(path, f"model class {package['klass']!r}")
    return arch, tuple(package.get("args") or ()), dict(package["kwargs"]), package["state"]


def read_safetensors(path: Path) -> tuple[str, tuple, dict, dict]:
    from safetensors import safe_open
    from safetensors import SafetensorError

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            state = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError) as exc:
        raise _bad(path, str(exc)[:200]) from exc
    if "klass" not in meta or "kwargs" not in meta:
        raise _bad(path, "metadata lacks klass/kwargs")
    if "structure" in meta:
        raise UserError(f"{path} holds a DiffQ-quantized state", "use the non-quantized model (e.g. htdemucs, not mdx_q)")
    arch = _HF_CLASS.get(meta["klass"])
    if arch is None:
        raise _bad(path, f"model class {meta['klass']!r}")
    try:
        args = tuple(_decode(json.loads(meta.get("args", "[]"))))
        kwargs = _decode(json.loads(meta["kwargs"]))
    except json.JSONDecodeError as exc:
        raise _bad(path, f"metadata is not JSON: {exc}") from exc
    return arch, args, kwargs, state


def load(path) -> tuple[Any, str, dict]:
    """(model in eval mode, arch, kwargs) from a checkpoint file, kwargs taken from the file."""
    import inspect
    import warnings

    import torch

    from xopt.models.demucs.core import model_classes

    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}", "check the --checkpoint path")
    with open(path, "rb") as fh:
        magic = fh.read(8)
    reader = read_th if magic[:2] == b"PK" or magic[:1] == b"\x80" else read_safetensors  # zip or legacy pickle
    arch, args, kwargs, state = reader(path)
    if state.get("__quantized"):
        raise UserError(f"{path} holds a DiffQ-quantized state", "use the non-quantized model (e.g. htdemucs, not mdx_q)")
    klass = model_classes()[arch]
    accepted = inspect.signature(klass).parameters
    dropped = sorted(k for k in kwargs if k not in accepted)  # demucs' own load_model drops these too
    kwargs = {k: v for k, v in kwargs.items() if k in accepted}
    model = klass(*args, **kwargs)
    state = {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in state.items()}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.load_state_dict(state)
    except RuntimeError as exc:
        raise _bad(path, f"state does not fit its own kwargs: {str(exc).splitlines()[0][:200]}") from exc
    info = {"arch": arch, "kwargs": kwargs, "dropped_kwargs": dropped}
    return model.eval(), arch, info
