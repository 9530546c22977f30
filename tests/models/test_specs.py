"""Every registered model's spec: its "module:attr" hooks resolve, and the small hooks behave."""
from __future__ import annotations

import pytest

from xopt.registry import list_models
from xopt.spec import Hook, resolve


def _hooks(spec):
    fields = [spec.build, spec.example_inputs, spec.validation_inputs, spec.calibration_inputs, spec.drift,
              spec.perturb, spec.profile_inputs, spec.budget_checks, spec.shrink, *spec.patchers]
    if spec.fit:
        fields += [spec.fit.search, spec.fit.chunk]
    fields.append(spec.engine.shapes)
    return [h for h in fields if isinstance(h, Hook)]


@pytest.mark.parametrize("spec", list_models(), ids=lambda s: s.name)
def test_every_hook_reference_resolves(spec):
    for h in _hooks(spec):
        if h.ref.startswith("xopt.models.openfold.patchers"):
            pytest.importorskip("openfold")
        assert callable(resolve(h.ref)), h.ref
    if spec.pipeline:
        assert callable(resolve(spec.pipeline))


def test_resolve_rejects_a_malformed_reference():
    with pytest.raises(ValueError, match="module:attr"):
        resolve("xopt.models.modnet.build")


def test_shrink_hooks_step_down_to_a_floor():
    specs = {s.name: s for s in list_models()}
    t, seen = {"height": 512, "width": 512, "fps": 30.0}, []
    while t is not None:
        seen.append((t["height"], t["width"]))
        t = specs["modnet"].shrink(t)
    assert seen == [(512, 512), (256, 256), (128, 128), (64, 64)]
    t, batches = {"batch": 4, "segment_seconds": 7.8}, []
    while t is not None:
        batches.append(t["batch"])
        t = specs["demucs"].shrink(t)
    assert batches == [4, 2, 1]
