"""Demucs checkpoints in both upstream formats, written by demucs' own code where the wheel has
it, loaded through `build(checkpoint=...)` with weights_only=True."""
import json
import sys
import types
from fractions import Fraction

import numpy as np
import pytest

from xopt.errors import UserError
from xopt.runtime.backends.torch_eager import torch_outputs
from xopt.models.demucs import pipeline as host

torch = pytest.importorskip("torch")
pytest.importorskip("demucs")

from ._fixtures import spec, tiny  # noqa: E402,F401  (fixtures)


def _sources(module, feed):
    return host.sources_of(torch_outputs(module, feed, ["spec_out", "wave_out"]))


def _encode(value):
    if isinstance(value, Fraction):
        return {"_type": "fraction", "numerator": value.numerator, "denominator": value.denominator}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _save_safetensors(model, path):
    """The layout `demucs.hf.load_safetensors_model` reads (the writer is not in the wheel)."""
    from safetensors.torch import save_file

    args, kwargs = model._init_args_kwargs
    meta = {"klass": f"{type(model).__module__}.{type(model).__name__}", "args": json.dumps(_encode(list(args))),
            "kwargs": json.dumps(_encode(kwargs))}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata=meta)


@pytest.fixture
def omegaconf(monkeypatch):
    """serialize_model converts the training args with OmegaConf; a plain dict needs no conversion."""
    try:
        import omegaconf  # noqa: F401
    except ImportError:
        stub = types.ModuleType("omegaconf")
        stub.OmegaConf = types.SimpleNamespace(to_container=lambda cfg, resolve=True: dict(cfg))
        monkeypatch.setitem(sys.modules, "omegaconf", stub)


@pytest.mark.parametrize("fmt", ["th-half", "th-full", "safetensors"])
def test_checkpoint_round_trip(spec, tiny, tmp_path, fmt, omegaconf):
    from demucs.hf import load_safetensors_model
    from demucs.states import load_model, save_with_checksum, serialize_model

    model = tiny.extra["model"]
    if fmt == "safetensors":
        path = tmp_path / "tiny.safetensors"
        _save_safetensors(model, path)
        upstream = load_safetensors_model(path)
    else:
        save_with_checksum(serialize_model(model, {"epochs": 1}, half=fmt == "th-half"), tmp_path / "tiny.th")
        (path,) = tmp_path.glob("tiny-*.th")
        upstream = load_model(path)
    built = spec.build(checkpoint=str(path))
    assert built.weights.kind == "checkpoint" and built.weights.sha256
    assert built.config["arch"] == "htdemucs" and built.config["kwargs"]["segment"] == 0.5
    feed = host.segment_feed(built.config["segment_samples"], 1, 4)
    ours = _sources(built.module, feed)
    with torch.no_grad():
        theirs = upstream(torch.from_numpy(feed["mix"])).numpy()
    assert np.abs(ours - theirs).max() < 1e-5  # same weights as demucs' own loader
    if fmt != "th-half":
        assert np.array_equal(torch_outputs(built.module, feed, spec.output_names)["wave_out"],
                              torch_outputs(tiny.module, feed, spec.output_names)["wave_out"])


def test_checkpoint_with_foreign_pickle_globals_is_refused(spec, tiny, tmp_path):
    import argparse

    model = tiny.extra["model"]
    args, kwargs = model._init_args_kwargs
    package = {"klass": type(model), "args": args, "kwargs": kwargs, "state": model.state_dict(),
               "training_args": argparse.Namespace(lr=1)}
    torch.save(package, tmp_path / "bad.th")
    with pytest.raises(UserError, match="weights_only"):
        spec.build(checkpoint=str(tmp_path / "bad.th"))
    (tmp_path / "junk.th").write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError, match="not a Demucs checkpoint"):
        spec.build(checkpoint=str(tmp_path / "junk.th"))


