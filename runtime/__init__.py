"""Load built artifacts and run them: `xopt.runtime.load(path_or_manifest, backend="ort-cpu")`.

Imports no torch unless the `torch` backend (or a model pipeline that needs it) is used.
"""
from __future__ import annotations

from pathlib import Path

from xopt.errors import UserError
from xopt.runtime.backends.base import Session, all_backends, get_backend
from xopt.runtime.pipeline import pipeline_class

__all__ = ["load", "load_pipeline", "Session", "all_backends", "get_backend"]


def _resolve(path_or_manifest, variant: str | None):
    """-> (manifest or None, artifact path, variant entry or None)."""
    from xopt.manifest import MANIFEST_NAME, Manifest
    from xopt.manifest import load as load_manifest

    if isinstance(path_or_manifest, Manifest):
        manifest = path_or_manifest
    else:
        path = Path(path_or_manifest)
        if not path.exists():
            raise UserError(f"{path} does not exist", "pass an export directory, a manifest.json or an .onnx file")
        if path.is_dir() or path.name == MANIFEST_NAME:
            manifest = load_manifest(path)
        else:
            return None, path, None
    entry = manifest.variant(variant or "fp32")
    return manifest, manifest.path_of(entry["name"]), entry


def load(path_or_manifest, backend: str = "ort-cpu", variant: str | None = None, **options) -> Session:
    """A session on one artifact. `path_or_manifest`: export directory, manifest, or artifact file."""
    b = get_backend(backend)
    manifest, path, entry = _resolve(path_or_manifest, variant)
    if b.artifact == "torch":
        if manifest is None:
            raise UserError("the torch backend needs an export directory (it rebuilds the model from the manifest)",
                            "pass the directory xopt export wrote")
        return b.session(manifest.directory, **options)
    if b.artifact == "engine":
        engines = (entry or {}).get("engines") or []
        if entry is not None and not engines:
            raise UserError(f"variant {entry['name']} has no TensorRT engine",
                            "build one with xopt export MODEL --engine trt")
        if entry is not None:
            path = manifest.directory / engines[-1]["path"]
    elif entry is not None:
        options = {**entry.get("ort_options", {}), **options}
    if not path.exists():
        raise UserError(f"artifact {path} is missing", "re-run xopt export with --force")
    if path.is_dir():
        raise UserError(f"{path} is a directory, not a model file", "pass the .onnx/.engine file or its export directory")
    if entry is not None and b.artifact == "onnx":
        verify_artifact(path, entry)
    session = b.session(path, **options)
    if entry is not None:
        from xopt.manifest import tensor_names

        expected = tensor_names(entry)
        if expected and session.input_names != expected:
            session.close()
            raise UserError(f"{path} takes inputs {session.input_names}, the manifest says {expected}",
                            "re-export it with xopt export --force")
        if entry.get("graphs") and b.artifact == "onnx":
            return _assemble(manifest, entry, session, b, options)
    return session


def _assemble(manifest, entry: dict, main: Session, backend, options: dict) -> Session:
    """A variant shipped as several graphs: sessions on each (verified like the main one), put
    together by the model's `assemble` hook (e.g. a host-driven loop over them)."""
    from xopt.registry import get_model

    spec = get_model(manifest.model)
    if spec.assemble is None:
        return main
    graphs: dict[str, Session] = {}
    try:
        for g in entry["graphs"]:
            path = manifest.directory / g["path"]
            if not path.exists():
                raise UserError(f"artifact {path} is missing", "re-run xopt export with --force")
            verify_artifact(path, g)
            graphs[g["name"]] = backend.session(path, **options)
    except BaseException:
        for s in graphs.values():
            s.close()
        main.close()
        raise
    return spec.assemble(main, graphs, entry)


def verify_artifact(path: Path, entry: dict) -> None:
    """An artifact replaced or truncated after export would otherwise fail deep inside a backend
    (or, in the exporter, be built upon): its bytes must hash to the manifest entry's sha256."""
    from xopt.hashing import sha256_file

    if not path.is_file():
        raise UserError(f"artifact {path} is missing", "re-run xopt export with --force")
    if path.stat().st_size == 0:
        raise UserError(f"{path} is empty", "re-run xopt export with --force")
    if entry.get("sha256") and sha256_file(path) != entry["sha256"]:
        raise UserError(f"{path} changed since it was exported (sha256 differs from the manifest)",
                        "re-run xopt export with --force to rebuild it")


def load_pipeline(path_or_manifest, backend: str = "ort-cpu", variant: str | None = None, **options):
    """The model's embeddable pipeline (pre/post-processing around a session)."""
    from xopt.manifest import MANIFEST_NAME, Manifest
    from xopt.manifest import load as load_manifest
    from xopt.registry import get_model

    if isinstance(path_or_manifest, Manifest):
        manifest = path_or_manifest
    else:
        path = Path(path_or_manifest)
        if path.is_file() and path.name != MANIFEST_NAME and path.suffix != ".json":
            # A bare .onnx/.engine says nothing of the pre/post-processing configuration.
            raise UserError(f"{path} is a file, and a pipeline needs the export directory (an .onnx alone "
                            "lacks its pre/post-processing settings)",
                            "pass the directory xopt export wrote (it holds manifest.json)")
        manifest = load_manifest(path)
    spec = get_model(manifest.model)
    cls = pipeline_class(spec)
    if cls is None:
        raise UserError(f"model {spec.name} has no runtime pipeline", "use xopt.runtime.load for raw sessions")
    entry = manifest.variant(variant or "fp32")
    session = load(manifest, backend=backend, variant=variant, **options)
    return cls(session, pipeline_config(manifest), variant=entry)


def pipeline_config(manifest) -> dict:
    """What a pipeline is configured with: the export's config, and the weights provenance for
    pipelines that rebuild parts of the model in PyTorch (OpenFold's structure module)."""
    return {**manifest.config, "weights": manifest.weights}


def verify_variants(manifest, names) -> None:
    """`verify_artifact` on each named variant of `manifest`: its main file and its extra graphs."""
    for name in names:
        entry = manifest.variant(name)
        verify_artifact(manifest.path_of(name), entry)
        for g in entry.get("graphs") or ():
            verify_artifact((manifest.directory or Path(".")) / g["path"], g)
