"""Markers that skip themselves cleanly when the hardware or package is absent."""
from __future__ import annotations

import importlib.util
import os

import pytest
from hypothesis import settings

# CI replays the same examples every run (a red run must be reproducible); locally they vary.
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _gpu() -> bool:
    from xopt.machine import gpus

    return bool(gpus())


def _skip_reason(marker: str, config) -> str | None:
    if marker == "slow" and not config.getoption("--runslow"):
        return "slow: run with --runslow"
    if marker == "gpu" and not _gpu():
        return "gpu: no NVIDIA GPU/driver visible to NVML on this machine"
    if marker == "trt" and not (_has("tensorrt") or _has("tensorrt_rtx")):
        return 'trt: neither tensorrt nor tensorrt_rtx is installed (pip install "xopt[trt-rtx]")'
    if marker == "openfold" and not _has("openfold"):
        return "openfold: not installed (python models/openfold/install.py)"
    if marker == "tf" and not (_has("tensorflow") and _has("tf2onnx")):
        return 'tf: tensorflow/tf2onnx not installed (pip install "xopt[tf]")'
    return None


def pytest_collection_modifyitems(config, items):
    cache: dict[str, str | None] = {}
    for item in items:
        for marker in ("slow", "gpu", "trt", "openfold", "tf"):
            if item.get_closest_marker(marker):
                if marker not in cache:
                    cache[marker] = _skip_reason(marker, config)
                if cache[marker]:
                    item.add_marker(pytest.mark.skip(reason=cache[marker]))
