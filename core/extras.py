"""Lazy imports of optional heavy dependencies, each mapped to the extra that installs it."""
from __future__ import annotations

import importlib
import importlib.metadata as md
import warnings

from xopt.errors import MissingExtraError

EXTRA_OF = {
    "onnxruntime": "cpu",
    "tensorrt": "trt",
    "tensorrt_rtx": "trt-rtx",
    "tensorflow": "tf",
    "tf2onnx": "tf",
    "polygraphy": "trt",
    "torch": "export",
    "onnxslim": "export",
    "onnxconverter_common": "export",
    "onnxscript": "export",
    "skimage": "export",
    "av": "video",
    "plotly": "report",
}


def require(module: str, extra: str | None = None, why: str = ""):
    """Import `module` or raise a user error naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(module, extra or EXTRA_OF.get(module, module), why) from exc


def dist_version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def ort_conflict() -> str | None:
    """Both wheels install the module `onnxruntime`; whichever unpacked last wins, silently."""
    cpu, gpu = dist_version("onnxruntime"), dist_version("onnxruntime-gpu")
    if cpu and gpu:
        return (f"both onnxruntime {cpu} and onnxruntime-gpu {gpu} are installed; they overwrite each other "
                "and providers break silently: pip uninstall -y onnxruntime onnxruntime-gpu, then install one")
    return None


def onnxruntime():
    conflict = ort_conflict()
    if conflict:
        warnings.warn(conflict, RuntimeWarning, stacklevel=2)
    return require("onnxruntime", "cpu")
