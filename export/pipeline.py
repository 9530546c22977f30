"""Export orchestration: build -> FP32 ONNX -> variants -> parity gate -> manifest.

Everything is produced in a private temporary directory inside the output directory and
renamed into place only after its parity check passed; the manifest is written last.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from xopt import progress
from xopt.atomic import dir_lock, is_disk_full
from xopt.errors import GateFailed, OutputExistsError, ParityError, UserError
from xopt import compare as parity
from xopt.runtime import verify_variants
from xopt.runtime.backends.torch_eager import torch_outputs
from xopt.export.onnx_export import io_signature, opset_of, to_onnx
from xopt.hashing import sha256_file
from xopt.manifest import MANIFEST_NAME, Manifest
from xopt.optimize.base import PassContext, get_pass
from xopt.registry import get_model
from xopt.spec import Built, ModelSpec, Variant, Weights
from xopt.stats import facts_text
from xopt.export.export_dir import (artifact_name, commit, existing, failure_record, recipe, to_build,
                                     weights_key)


@dataclass
class Source:
    """Where the FP32 graph and its reference come from when not from the spec's PyTorch build
    (e.g. a TensorFlow model): an ONNX path, a reference callable and weights provenance."""

    onnx_path: Path
    reference: Callable[[dict], dict]
    weights: dict
    facts: dict = field(default_factory=dict)


WORKDIR_PREFIX = ".xopt-tmp-"


def _remove_debris(out_dir: Path) -> None:
    """Work directories and manifest temporaries exist only while their export holds the
    directory's lock; any found by the holder of that lock were left by a killed process."""
    for p in out_dir.glob(WORKDIR_PREFIX + "*"):
        shutil.rmtree(p, ignore_errors=True)
    for p in out_dir.glob(f".{MANIFEST_NAME}.*.partial"):
        p.unlink(missing_ok=True)


def default_out_dir(model: str) -> Path:
    return Path("artifacts") / model


def parity_backend(precision: str) -> str:
    """ONNX Runtime's CPU provider has no BF16 kernels: a BF16 graph is validated on CUDA or not at all."""
    if precision != "bf16":
        return "ort-cpu"
    from xopt.runtime.backends.ort import probe_provider

    ok, why = probe_provider("CUDAExecutionProvider")
    if ok:
        return "ort-cuda"
    raise UserError(f"a BF16 graph cannot be validated on this machine: ONNX Runtime's CPU provider has no BF16 "
                    f"kernels and CUDA is unavailable ({why})",
                    "export BF16 variants where onnxruntime-gpu sees an NVIDIA GPU, or use the fp16 variant")


def _ort_outputs(path: Path, feeds: list[dict], ort_options: Mapping[str, Any], backend: str = "ort-cpu") -> list[dict]:
    from xopt.runtime.backends.base import get_backend

    with get_backend(backend).session(path, **dict(ort_options)) as sess:
        return [sess.run(f) for f in feeds]


def gate(artifact: Path, label: str, feeds: list[dict], refs: list[dict], tolerance: Mapping[str, float],
         ort_options: Mapping[str, Any], reference: str = "PyTorch FP32", backend: str = "ort-cpu") -> dict:
    """Run `artifact` on `feeds`, compare with `refs`, raise ParityError past `tolerance`."""
    return gate_outputs(_ort_outputs(artifact, feeds, ort_options, backend), label, feeds, refs, tolerance, reference)


def gate_outputs(outs: list[dict], label: str, feeds: list[dict], refs: list[dict], tolerance: Mapping[str, float],
                 reference: str = "PyTorch FP32") -> dict:
    diffs = parity.worst([parity.compare(r, o) for r, o in zip(refs, outs)])
    parity.check(label, diffs, tolerance, reference)
    worst_abs = max(d["max_abs"] for d in diffs.values())
    worst_rel = max(d["max_rel"] for d in diffs.values())
    return {"max_abs": worst_abs, "max_rel": worst_rel, "passed": True, "tolerance": dict(tolerance),
            "feeds": len(feeds), "outputs": diffs}


class _Exporter:
    def __init__(self, spec: ModelSpec, out_dir: Path, workdir: Path, built: Built, config: dict,
                 profile, pass_options: Mapping[str, Mapping], tolerances: Mapping[str, Mapping[str, float]],
                 source: Source | None):
        self.spec, self.out_dir, self.workdir, self.built = spec, out_dir, workdir, built
        self.config, self.profile, self.source = config, profile, source
        self.pass_options = pass_options
        self.tolerances = tolerances
        self.feeds = spec.validation_inputs(built)
        reference = source.reference if source else self._torch_reference(built.module)
        with progress.step(f"{spec.name}: FP32 reference outputs on {len(self.feeds)} validation inputs"):
            self.refs = [reference(f) for f in self.feeds]

    def _torch_reference(self, module):
        return lambda feed: torch_outputs(module, feed, self.spec.output_names)

    def context(self) -> PassContext:
        spec, built = self.spec, self.built
        return PassContext(model=spec.name, scopes={k: list(v) for k, v in spec.scopes.items()},
                           calibration=lambda n: spec.calibration_inputs(built, n), profile=self.profile,
                           workdir=self.workdir, config=dict(self.config),
                           weights=self.source.weights if self.source else built.weights.to_json())

    def export_graph(self, built: Built, dest: Path) -> Path:
        spec = self.spec
        with progress.step(f"{spec.name}: torch -> ONNX ({spec.exporter} exporter, opset {spec.opset})"):
            to_onnx(built.module, spec.example_inputs(built), dest, spec.input_names, spec.output_names,
                    spec.dynamic_axes, spec.opset, spec.exporter, spec.patchers, spec.export_options)
        return dest

    def run_passes(self, variant: Variant, src: Path, tag: str | None = None) -> tuple[Path, list[dict]]:
        applied = []
        current = src
        for i, (pass_name, spec_opts) in enumerate(variant.passes):
            p = get_pass(pass_name)
            opts = p.options.resolve({**spec_opts, **self.pass_options.get(pass_name, {})})
            dst = self.workdir / f"{tag or variant.name}.{i}.{pass_name}{p.output_suffix}"
            with progress.step(f"{self.spec.name} {variant.name}: pass {pass_name}") as facts_out:
                facts = p.apply(current, dst, opts, self.context())
                facts_out["note"] = facts_text(facts)  # 979.8, not 979.7717280002871
            applied.append({"name": pass_name, "options": opts, "facts": facts})
            current = dst
        return current, applied

    def make_variant(self, variant: Variant, fp32_path: Path | None) -> tuple[Path, dict]:
        spec = self.spec
        if variant.export_config is not None and self.source is not None:
            raise UserError(f"variant {variant.name} re-exports the model with its own settings, which a converted "
                            "model cannot do", "pick another variant")
        backend = parity_backend(variant.precision)  # before any work: BF16 may not be checkable here
        built = self.built
        if variant.export_config is not None:
            cfg = {**self.config, **variant.export_config}
            built = spec.build(checkpoint=self.built.weights.path, config=cfg, seed=self.built.weights.seed or 0)
            base = self.export_graph(built, self.workdir / f"{variant.name}.raw.onnx")
        elif fp32_path is None:
            base = self.source.onnx_path if self.source else self.export_graph(self.built, self.workdir / "raw.onnx")
        else:
            base = fp32_path
        staged, applied = self.run_passes(variant, base)
        if staged == base:
            staged = self.workdir / f"{variant.name}.onnx"
            shutil.copyfile(base, staged)
        tol, acceptance = self.acceptance(variant, applied)
        with progress.step(f"{spec.name} {variant.name}: parity vs FP32 {'reference' if self.source else 'PyTorch'}"):
            result = gate(staged, f"{spec.name} {variant.name}", self.feeds, self.refs, tol, variant.ort_options,
                          f"the {self.source.weights.get('kind')} model" if self.source else "PyTorch FP32", backend)
        if acceptance:
            result["acceptance"] = acceptance
        inputs, outputs = io_signature(staged)
        entry = {
            "name": variant.name, "precision": variant.precision, "path": artifact_name(spec.name, variant.name),
            "sha256": sha256_file(staged), "size_bytes": staged.stat().st_size, "opset": opset_of(staged),
            "inputs": inputs, "outputs": outputs, "parity": result, "passes": applied,
            "ort_options": dict(variant.ort_options), "description": variant.description, "parity_backend": backend,
        }
        if variant.export_config is not None:
            entry["export_config"] = dict(variant.export_config)
        if built.settings:
            entry["settings"] = built.settings  # resolved knobs, e.g. chunk sizes, for the reader
        if spec.graphs is not None and variant.with_graphs:
            entry["graphs"] = self.make_graphs(variant, built, staged, entry, tol, backend)
        return staged, entry

    def acceptance(self, variant: Variant, applied: list[dict]) -> tuple[dict, str | None]:
        """The parity bounds a variant must meet, and what accepted it when that was not them.

        One gate per variant: a gated pass already judged the variant in the model's own terms
        (or recorded why its gate was not applied), against the FP32 graph that itself matches
        PyTorch; a second, fixed tolerance would only contradict it. Its parity check then
        records the numbers and refuses only non-finite outputs. A --tolerance the user gave
        still applies."""
        own = self.tolerances.get(variant.name)
        gated = next(((p["name"], p["facts"]["gate"]) for p in applied if (p.get("facts") or {}).get("gate")), None)
        if own or gated is None:
            return dict(own or variant.tolerance.as_dict()), None
        name, facts = gated
        return {}, f"the {name} pass's drift gate ({facts.get('text', '')}); parity numbers recorded, finite required"

    def _graph_refs(self) -> dict:
        """Outputs of every extra graph of the FP32 build on its validation feeds (once per export)."""
        if getattr(self, "_refs_by_graph", None) is None:
            graphs = self.spec.graphs(self.built)
            with progress.step(f"{self.spec.name}: FP32 reference outputs of {len(graphs)} more graphs"):
                self._refs_by_graph = {g.name: [torch_outputs(g.module, f, g.output_names) for f in g.validation]
                                       for g in graphs}
        return self._refs_by_graph

    def make_graphs(self, variant: Variant, built: Built, main: Path, entry: dict, tol: dict, backend: str) -> list:
        """Export, pass and gate the spec's extra graphs next to `main` (the staged main artifact);
        then gate what xopt.runtime.load assembles from them on the main validation feeds."""
        spec, refs = self.spec, self._graph_refs()
        graphs = spec.graphs(built)
        records = []
        with progress.step(f"{spec.name} {variant.name}: {len(graphs)} more graphs (export, parity)") as facts:
            for g in graphs:
                raw = self.workdir / f"{variant.name}.{g.name}.raw.onnx"
                to_onnx(g.module, g.example, raw, g.input_names, g.output_names, g.dynamic_axes, spec.opset,
                        spec.exporter, spec.patchers, spec.export_options)
                path, applied = self.run_passes(variant, raw, tag=f"{variant.name}.{g.name}")
                name = artifact_name(spec.name, variant.name, g.name)
                os.replace(path, main.parent / name)
                result = gate(main.parent / name, f"{spec.name} {variant.name} {g.name}", g.validation, refs[g.name],
                              g.tolerance.as_dict() if g.tolerance else tol, variant.ort_options,
                              backend=backend)
                inputs, outputs = io_signature(main.parent / name)
                records.append({"name": g.name, "path": name, "sha256": sha256_file(main.parent / name),
                                "size_bytes": (main.parent / name).stat().st_size, "inputs": inputs,
                                "outputs": outputs, "parity": result, "passes": applied})
            facts["note"] = f"worst max abs {max((r['parity']['max_abs'] for r in records), default=0):.2e}"
        if spec.assemble is not None:
            entry["parity"]["assembled"] = self._gate_assembled(variant, main, {**entry, "graphs": records},
                                                                tol, backend)
        return records

    def _gate_assembled(self, variant: Variant, main: Path, entry: dict, tol: dict, backend: str) -> dict | None:
        from xopt.runtime.backends.base import get_backend

        b = get_backend(backend)
        opts = dict(variant.ort_options)
        sessions = {g["name"]: b.session(main.parent / g["path"], **opts) for g in entry["graphs"]}
        with b.session(main, **opts) as base:
            session = self.spec.assemble(base, sessions, entry)
            try:
                if session is base:
                    return None
                outs = [session.run(f) for f in self.feeds]
            finally:
                for s in sessions.values():
                    s.close()
        return gate_outputs(outs, f"{self.spec.name} {variant.name} (assembled from its graphs)", self.feeds,
                            self.refs, tol)


def _resolve_variants(spec: ModelSpec, names: Sequence[str]) -> list[Variant]:
    wanted = ["fp32"] + [n for n in names if n != "fp32"]
    return [spec.variant(n) for n in dict.fromkeys(wanted)]


def export_model(name: str, variants: Sequence[str] = ("fp32",), out_dir: str | os.PathLike | None = None,
                 checkpoint: str | None = None, config: str | None = None, config_overrides: Mapping | None = None,
                 profile=None, force: bool = False, pass_options: Mapping[str, Mapping] | None = None,
                 seed: int = 0, tolerances: Mapping[str, Mapping[str, float]] | None = None,
                 source: Source | None = None) -> Manifest:
    """Export `name` and its `variants` into `out_dir` and return the manifest written there."""
    from xopt.extras import require
    from xopt.machine import describe, versions

    if source is None:  # a TensorFlow source converts without torch
        require("torch", "export", "xopt export builds the PyTorch model")

    spec = get_model(name)
    wanted = _resolve_variants(spec, variants)
    cfg = spec.config(config, config_overrides)
    out_dir = Path(out_dir) if out_dir else default_out_dir(name)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir} is a file", "pass a directory to --out")
    with dir_lock(out_dir, tidy=True):
        want_weights = weights_key(checkpoint, seed, source)
        manifest = existing(out_dir, spec, want_weights, cfg, force)
        todo = to_build(manifest, wanted, out_dir, pass_options or {}, force)
        if manifest is not None:  # what is kept or built upon must still be what the manifest records
            verify_variants(manifest, [v["name"] for v in manifest.variants if v["name"] not in {t.name for t in todo}])
        if not todo:
            return manifest
        for v in todo:
            target = out_dir / artifact_name(name, v.name)
            if target.exists() and not force:
                raise OutputExistsError(target)
            parity_backend(v.precision)  # before any work: a BF16 graph may not be checkable here
        _remove_debris(out_dir)
        workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX, dir=out_dir))
        try:
            if source is not None:
                # The graph and its reference come from the source; spec callables get no module.
                built = Built(None, Weights(**{k: source.weights.get(k) for k in ("kind", "path", "sha256")}), cfg)
            else:
                with progress.step(f"{name}: build PyTorch model ({cfg['preset']}, "
                                   f"{'checkpoint' if checkpoint else 'seeded-random'})"):
                    built = spec.build(checkpoint=checkpoint, config=cfg, seed=seed)
            if built.weights.kind == "checkpoint":
                built.weights.path = str(Path(checkpoint).resolve())
                built.weights.sha256 = built.weights.sha256 or sha256_file(checkpoint)
            exporter = _Exporter(spec, out_dir, workdir, built, cfg, profile, pass_options or {}, tolerances or {},
                                 source)
            if manifest is None:
                manifest = Manifest(model=name, weights=source.weights if source else built.weights.to_json(),
                                    config=cfg, covers=spec.covers)
            staged, failed = [], []
            fp32_path = None if any(v.name == "fp32" for v in todo) else manifest.path_of("fp32")
            for v in todo:
                try:
                    path, entry = exporter.make_variant(v, fp32_path)
                except (GateFailed, ParityError) as exc:
                    if v.name == "fp32":  # every other variant is built from it
                        raise
                    failed.append(failure_record(v, exc, recipe(v, pass_options or {})))
                    progress.info(f"{name} {v.name}: FAILED: {exc.problem}")
                    continue
                if v.name == "fp32":
                    fp32_path = path
                if source:
                    entry["source"] = source.facts
                staged.append((path, entry))
            for _, entry in staged:
                manifest.upsert(entry)
            for record in failed:
                manifest.record_failure(record)
            manifest.versions = versions()
            manifest.machine = {k: v for k, v in describe().items() if k != "versions"}
            manifest.directory = out_dir
            commit(out_dir, staged, manifest)
        except OSError as exc:
            if is_disk_full(exc):
                raise UserError(f"the disk filled up while exporting into {out_dir} ({exc.strerror})",
                                "free some space (or choose another --out) and run the export again") from exc
            raise
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    return manifest

