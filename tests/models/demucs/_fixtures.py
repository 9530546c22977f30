"""Fixtures shared by the Demucs test modules (imported by name so pytest registers them)."""
import pytest

from xopt.registry import get_model


@pytest.fixture(scope="module")
def spec():
    return get_model("demucs")


@pytest.fixture(scope="module")
def tiny(spec):
    return spec.build(config="tiny", seed=0)
