"""Loading a TensorFlow model for `--from-tf`: SavedModel directories and Keras files, the
checks that must run before tf2onnx sees them, and their weights provenance.

tensorflow is imported lazily (the `tf` extra); nothing here runs at `xopt --help`.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from xopt.errors import UserError
from xopt.extras import require
from xopt.hashing import sha256_file

KERAS_SUFFIXES = (".keras", ".h5")
# Files of a SavedModel that determine what it computes; fingerprint.pb is derived from them
# and assets/ holds vocabularies and the like, not weights.
SAVEDMODEL_GRAPH_FILES = ("saved_model.pb", "saved_model.pbtxt")
# Keras 3 UpSampling2D computes its output size in Python for every mode but "nearest";
# with a symbolic height/width that raises while tracing (tf2onnx never gets a graph).
_UPSAMPLING_TRACEABLE = ("nearest",)


# TF's C++ runtime prints these at import, before absl logging is set up, so no environment
# variable silences them (TF 2.21); they would bury the CLI's progress lines.
_IMPORT_NOISE = ("I0000 ", "WARNING: All log messages before absl::InitializeLog()",
                 "To enable the following instructions")


@contextlib.contextmanager
def _quiet_stderr():
    """Hold back fd-2 output during a native import; replay all but the known INFO noise."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (embedded interpreter): nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            kept = [ln for ln in sink.read().decode(errors="replace").splitlines(keepends=True)
                    if not ln.startswith(_IMPORT_NOISE)]
            sys.stderr.write("".join(kept))


def tensorflow():
    if sys.modules.get("tensorflow") is not None:  # None: import blocked, let require() say so
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # silences the C++ warnings that come after import
    with _quiet_stderr():
        return require("tensorflow", "tf", "needed by --from-tf")


def tf2onnx():
    tensorflow()
    with _quiet_stderr():
        return require("tf2onnx", "tf", "needed by --from-tf")


@dataclass
class TFModel:
    """A loaded model reduced to one tensor in, one tensor out, in the model's own layout."""

    path: Path
    format: str  # "savedmodel" | "keras"
    call: Callable[[Any], Any]  # tf tensor -> tf tensor, traceable inside tf.function
    input_shape: tuple  # from the model's signature: None for dynamic axes
    output_shape: tuple
    dtype: Any  # tf.DType of the input
    signature: str = ""  # the SavedModel signature used
    keep: Any = None  # the loaded object: its variables die with it, and a traced call would fail


# ---------------------------------------------------------------- provenance

def savedmodel_files(root: Path) -> list[Path]:
    graph = [root / n for n in SAVEDMODEL_GRAPH_FILES if (root / n).is_file()]
    variables = sorted(p for p in (root / "variables").rglob("*") if p.is_file()) if (root / "variables").is_dir() else []
    return graph + variables


def savedmodel_sha256(root: str | os.PathLike) -> str:
    """One digest for a SavedModel directory: SHA-256 over the lines "<sha256 of file>  <relative
    posix path>\\n" of saved_model.pb and every file under variables/, sorted by path. Renaming or
    moving the directory keeps it; changing the graph or any weight changes it."""
    root = Path(root)
    h = hashlib.sha256()
    for f in sorted(savedmodel_files(root), key=lambda p: p.relative_to(root).as_posix()):
        h.update(f"{sha256_file(f)}  {f.relative_to(root).as_posix()}\n".encode())
    return h.hexdigest()


def weights_of(model: TFModel) -> dict:
    path = model.path.resolve()
    if model.format == "savedmodel":
        return {"kind": "tensorflow", "path": str(path), "sha256": savedmodel_sha256(path),
                "note": "SavedModel: sha256 over '<sha256>  <path>' lines of saved_model.pb and variables/*, sorted"}
    return {"kind": "tensorflow", "path": str(path), "sha256": sha256_file(path), "note": f"Keras file ({path.suffix})"}


# ---------------------------------------------------------------- loading

def _import_custom(modules: Sequence[str]) -> None:
    """Import modules (dotted names or .py files) that register custom Keras layers."""
    for ref in modules:
        p = Path(ref)
        try:
            if p.suffix == ".py":
                if not p.is_file():
                    raise UserError(f"custom layer module {p} does not exist", "pass an existing .py file")
                spec = importlib.util.spec_from_file_location(f"xopt_tf_custom_{p.stem}", p)
                mod = importlib.util.module_from_spec(spec)
                sys.modules[spec.name] = mod
                spec.loader.exec_module(mod)
            else:
                importlib.import_module(str(ref))
        except ImportError as exc:
            raise UserError(f"cannot import custom layer module {ref} ({exc})",
                            "pass an importable module name or a .py file path") from exc


def _shape(spec) -> tuple:
    return tuple(None if d is None else int(d) for d in spec.shape)


def load_savedmodel(path: Path) -> TFModel:
    tf = tensorflow()
    if not any((path / n).is_file() for n in SAVEDMODEL_GRAPH_FILES):
        raise UserError(f"{path} is a directory without saved_model.pb, not a TensorFlow SavedModel",
                        "pass a SavedModel directory (model.export(DIR) in Keras 3) or a .keras file")
    try:
        obj = tf.saved_model.load(str(path))
    except Exception as exc:  # TF raises many types for unreadable or incompatible protos
        raise UserError(f"TensorFlow could not load the SavedModel {path} ({_first_line(exc)})",
                        "re-export it with this TensorFlow version (model.export(DIR))") from exc
    sigs = dict(obj.signatures)
    if not sigs:
        raise UserError(f"the SavedModel {path} has no serving signature",
                        "save it with model.export(DIR) (Keras 3) or tf.saved_model.save(model, DIR, signatures=fn)")
    name = "serving_default" if "serving_default" in sigs else sorted(sigs)[0]
    fn = sigs[name]
    args, kwargs = fn.structured_input_signature
    inputs = list(kwargs.items()) + [(None, a) for a in args]
    outputs = fn.structured_outputs
    outputs = list(outputs.items()) if isinstance(outputs, dict) else list(enumerate(outputs))
    if len(inputs) != 1 or len(outputs) != 1:
        raise UserError(f"signature '{name}' of {path} has {len(inputs)} inputs and {len(outputs)} outputs",
                        "--from-tf converts models with one image input and one output: export such a signature")
    (in_key, in_spec), (out_key, out_spec) = inputs[0], outputs[0]

    def call(x):
        return (fn(**{in_key: x}) if in_key is not None else fn(x))[out_key]

    return TFModel(path, "savedmodel", call, _shape(in_spec), _shape(out_spec), in_spec.dtype, name, keep=obj)


def _layers(model):
    for layer in getattr(model, "layers", ()):
        yield layer
        yield from _layers(layer)


def check_keras_traceable(model, path: Path) -> None:
    """Refuse, before tracing, a Keras 3 model that cannot be traced with a dynamic height/width."""
    shape = tuple(model.inputs[0].shape) if getattr(model, "inputs", None) else ()
    if len(shape) != 4 or (shape[1] is not None and shape[2] is not None):
        return  # fixed spatial size: every UpSampling2D mode traces
    for layer in _layers(model):
        if type(layer).__name__ != "UpSampling2D" or not type(layer).__module__.startswith("keras."):
            continue  # tf_keras (Keras 2) builds the size with tf ops and traces fine
        mode = getattr(layer, "interpolation", "nearest")
        if mode not in _UPSAMPLING_TRACEABLE:
            raise upsampling_error(path, layer.name, mode)


def upsampling_error(path: Path, layer: str | None = None, mode: str = "bilinear") -> UserError:
    which = f" (layer '{layer}')" if layer else ""
    return UserError(
        f"{path}: Keras 3 UpSampling2D(interpolation='{mode}'){which} cannot be converted with a "
        f"dynamic height/width (Keras computes its output size in Python, which fails when traced)",
        f"replace it with a layer whose call() is `s = tf.shape(x); return tf.image.resize(x, (s[1] * f, s[2] * f), "
        f"method='{mode}')` (it converts to an ONNX Resize with half_pixel coordinates that matches), "
        f"or re-save the model with a fixed input size, e.g. keras.Input((512, 512, 3))")


def load_keras(path: Path, custom_modules: Sequence[str] = ()) -> TFModel:
    tf = tensorflow()
    with _quiet_stderr():
        keras = require("keras", "tf", "needed by --from-tf for .keras files")
    _import_custom(custom_modules)
    try:
        model = keras.models.load_model(str(path), compile=False)
    except (TypeError, ValueError) as exc:
        missing = re.search(r"Could not locate (?:class|function) '([^']+)'", str(exc))
        if missing:
            raise UserError(f"{path} uses the custom Keras object '{missing.group(1)}', whose Python code is not "
                            "imported here", "export the model as a SavedModel instead (model.export(DIR) keeps the "
                            "computation, not the Python class), or import the module that registers it first "
                            "(custom_modules=)") from exc
        raise UserError(f"Keras could not load {path} ({_first_line(exc)})",
                        "re-save it with model.save('model.keras')") from exc
    except (OSError, ImportError) as exc:
        raise UserError(f"Keras could not read {path} ({_first_line(exc)})", "pass a .keras file saved by Keras") from exc
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UserError(f"{path} has {len(model.inputs)} inputs and {len(model.outputs)} outputs",
                        "--from-tf converts models with one image input and one output")
    check_keras_traceable(model, path)

    def call(x):
        y = model(x, training=False)
        return y[0] if isinstance(y, (list, tuple)) else y

    dtype = tf.as_dtype(model.inputs[0].dtype)
    return TFModel(path, "keras", call, tuple(model.inputs[0].shape), tuple(model.outputs[0].shape), dtype, keep=model)


def load(path: str | os.PathLike, custom_modules: Sequence[str] = ()) -> TFModel:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist", "pass a SavedModel directory or a .keras file to --from-tf")
    if path.is_dir():
        return load_savedmodel(path)
    if path.suffix.lower() in KERAS_SUFFIXES:
        return load_keras(path, custom_modules)
    if path.name in SAVEDMODEL_GRAPH_FILES:
        return load_savedmodel(path.parent)
    raise UserError(f"{path} is neither a SavedModel directory nor a Keras file ({', '.join(KERAS_SUFFIXES)})",
                    "pass the SavedModel directory (the one holding saved_model.pb) or a .keras file")


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0][:300] if lines else type(exc).__name__
