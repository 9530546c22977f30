"""`xopt run openfold SEQ.fasta -o OUT.pdb`: fold one chain with the exported trunk.

FASTA/A3M parsing and validation are pure Python (seq.py); features go through
OpenFold's FeaturePipeline; the Evoformer trunk runs through the session (ONNX Runtime,
TensorRT, or PyTorch); embedders, extra-MSA stack, structure module and heads run in
PyTorch with recycling on the host; the PDB is written by OpenFold's protein utilities with
pLDDT in the B-factor column. Unlike the other models' pipelines this one needs torch and
OpenFold (the structure module has no exported graph); it rebuilds the PyTorch half of the
model from the export's config and weights (xopt.models.openfold.*).

Input files: `.fasta`/`.fa`/`.faa`/`.txt` is one query (single-sequence mode); `.a3m` is an
alignment whose first row is the query.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from xopt.errors import UserError
from xopt.models.openfold.seq import Alignment, Query, clean_sequence, read_a3m, read_fasta
from xopt.runtime.pipeline import Pipeline

A3M_SUFFIXES = (".a3m",)


def _weights_of(session, config) -> dict:
    """Weights provenance: from the config (load_pipeline puts the manifest's there), or the
    torch session's build."""
    if config.get("weights"):
        return dict(config["weights"])
    built = getattr(session, "built", None)
    if built is not None:
        return built.weights.to_json()
    return {"kind": "seeded-random", "seed": 0}


def _artifact_settings(session, cfg, entry: dict) -> dict:
    """Trunk settings of the artifact behind `session`: its manifest entry's export_config applied."""
    from xopt.models.openfold import trunk_settings

    built = getattr(session, "built", None)
    if built is not None:
        return dict(built.settings)
    return trunk_settings({**cfg, **(entry.get("export_config") or {})})


def read_input(src: str | Path) -> tuple[Query, Alignment | None]:
    src = Path(src)
    if src.suffix.lower() in A3M_SUFFIXES:
        aln = read_a3m(src)
        query = clean_sequence(aln.rows[0].replace("-", ""), aln.names[0] or src.stem)
        return query, aln
    return read_fasta(src), None


class OpenFoldPipeline(Pipeline):
    input_kinds = ("fasta", "a3m")

    def __init__(self, session=None, config: dict | None = None, variant: dict | None = None):
        super().__init__(session, config, variant)
        from xopt.models.openfold.inputs import model_for
        from xopt.models.openfold import _cfg
        from xopt.models.openfold.fold import Folder, session_trunk

        self.cfg = _cfg(self.config)
        w = _weights_of(session, self.config)
        ckpt = w.get("path") if w.get("kind") == "checkpoint" else None
        self.weights = w
        self.model, self.of_cfg, _ = model_for(self.cfg, int(w.get("seed") or 0), ckpt)
        settings = _artifact_settings(session, self.cfg, self.variant)
        self.bucket = settings.get("bucket")
        if session is None or getattr(session, "built", None) is not None:
            # PyTorch trunk: chunk eagerly at any length (no bucket padding, that is for graphs),
            # in place, and with the triangle multiplication stepped like the fit measured it
            from xopt.models.openfold.budget import variant_settings
            from xopt.models.openfold.trunk import make_trunk

            eager = {**settings, **variant_settings(settings.get("precision", "fp32"), settings.get("chunk_size")),
                     "lma_chunks": settings.get("lma_chunks"), "bucket": None}
            trunk = make_trunk(self.model.evoformer, eager, inplace_safe=True)
            self.bucket = None
        else:
            trunk = session_trunk(session)
        self.folder = Folder(self.model, self.of_cfg, trunk=trunk)
        self.seed = int(self.config.get("feature_seed", 0))

    def features(self, query: Query, alignment: Alignment | None = None) -> dict:
        from xopt.models.openfold.features import process, raw_features

        return process(raw_features(query, alignment), self.of_cfg, seed=self.seed)

    def __call__(self, raw: Any) -> dict:
        """`raw`: a sequence string, a Query, or (Query, Alignment). Returns numpy results."""
        if isinstance(raw, str):
            raw = clean_sequence(raw)
        query, aln = raw if isinstance(raw, tuple) else (raw, None)
        if self.bucket and len(query.sequence) > self.bucket[1]:
            raise UserError(f"{len(query.sequence)} residues exceed this chunked artifact's {self.bucket[1]}-residue "
                            "bucket", "export with a larger bucket_residues (xopt export --chunk auto --profile) "
                            "or use an unchunked variant")
        try:
            result = self.folder(self.features(query, aln))
        except Exception as exc:
            if "negative dimension" in str(exc) or "Size() must be >= 0" in str(exc):
                raise UserError(f"{len(query.sequence)} residues exceed this chunked artifact's bucket",
                                "export with a larger bucket_residues (xopt export --chunk auto --profile) "
                                "or use an unchunked variant") from exc
            raise
        self._check_finite(result)
        result["sequence"] = query.sequence
        return result

    def _check_finite(self, result: dict) -> None:
        if np.isfinite(result["final_atom_positions"]).all() and np.isfinite(result["plddt"]).all():
            return
        from xopt.errors import NonFiniteError

        raise NonFiniteError("openfold prediction", "the trunk or structure module (positions/pLDDT)")

    def raw_samples(self, n: int, targets: dict, seed: int = 0) -> list[Query]:
        from xopt.models.openfold import sample_caps
        from xopt.models.openfold.features import RESTYPES

        rng = np.random.default_rng(seed)
        residues = sorted(int(r) for r in targets.get("residues", [64])) or [64]
        length = min(residues[0], sample_caps(self.cfg, targets)[0])
        return [Query(name=f"random{i}", sequence="".join(rng.choice(list(RESTYPES), size=length)))
                for i in range(n)]

    def to_pdb(self, result: dict) -> str:
        from openfold.np import protein

        mask = result["final_atom_mask"]
        b = np.asarray(result["plddt"])[:, None] * mask  # pLDDT (0-100) per residue, on every atom
        prot = protein.from_prediction(
            features={"aatype": result["aatype"], "residue_index": result["residue_index"]},
            result={"final_atom_positions": result["final_atom_positions"], "final_atom_mask": mask},
            b_factors=b, remark=self._remark(result))
        return protein.to_pdb(prot)

    def _remark(self, result: dict) -> str:
        w = self.weights
        kind = "seeded-random weights (not a real prediction)" if w.get("kind") != "checkpoint" else "checkpoint"
        ptm = f", pTM {result['ptm']:.3f}" if "ptm" in result else ""
        return f"xopt openfold {self.cfg.get('preset')}, {kind}, mean pLDDT {float(np.mean(result['plddt'])):.1f}{ptm}"

    def batch_target(self, src: Path, out_dir: Path) -> Path:
        return Path(out_dir) / f"{Path(src).stem}.pdb"  # one structure per FASTA/A3M file

    def process_file(self, src: Path, dst: Path, force: bool = False,
                     progress: Callable[[Iterable], Iterable] | None = None) -> list[Path]:
        from xopt.atomic import write_text

        dst = Path(dst)
        if dst.exists() and not force:
            from xopt.errors import OutputExistsError

            raise OutputExistsError(dst)
        query, aln = read_input(src)
        steps = progress([0], total=1) if progress else [0]
        for _ in steps:
            result = self((query, aln))
        write_text(dst, self.to_pdb(result), force=force)
        return [dst]

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
