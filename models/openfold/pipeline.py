"""`xopt run openfold SEQ.fasta -o OUT.pdb`: fold one chain.

FASTA/A3M parsing (seq.py), features (features.py) and the PDB writer (pdb.py, Biopython) are
numpy code. With an ONNX session (what `xopt.runtime.load` assembles from an export, session.py)
the whole model runs through ONNX Runtime with recycling on the host (hostfold.py): neither
torch nor OpenFold is imported. With the torch backend (or no session) the PyTorch model is
rebuilt from the export's config and weights and folds with OpenFold's own modules (fold.py).

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
    progress_unit = "structures"
    input_kinds = ("fasta", "a3m")

    def __init__(self, session=None, config: dict | None = None, variant: dict | None = None):
        super().__init__(session, config, variant)
        from xopt.models.openfold import _cfg

        self.cfg = _cfg(self.config)
        self.weights = _weights_of(session, self.config)
        self.seed = int(self.config.get("feature_seed", 0))
        # host-loop settings for this pipeline's folds (chunk_size, attn_chunk_size, storage);
        # empty: the export's
        self.overrides: dict = {}
        self.onnx = session is not None and hasattr(session, "fold")
        if not self.onnx:
            self._torch_folder(session)

    def _torch_folder(self, session) -> None:
        from xopt.models.openfold.budget import variant_settings
        from xopt.models.openfold.fold import Folder
        from xopt.models.openfold.inputs import model_for
        from xopt.models.openfold.trunk import make_trunk

        ckpt = self.weights.get("path") if self.weights.get("kind") == "checkpoint" else None
        self.model, self.of_cfg, _ = model_for(self.cfg, int(self.weights.get("seed") or 0), ckpt)
        settings = _artifact_settings(session, self.cfg, self.variant)
        # PyTorch chunks eagerly at any length, in place, with the triangle multiplication
        # stepped like the fit measured it
        eager = {**settings, **variant_settings(settings.get("precision", "fp32"), settings.get("chunk_size"))}
        self.folder = Folder(self.model, self.of_cfg, trunk=make_trunk(self.model.evoformer, eager, inplace_safe=True))

    @classmethod
    def check_input(cls, path: Path) -> dict:
        """The whole FASTA/A3M parsed (it is small): one query of amino acids, a consistent alignment."""
        query, aln = read_input(path)
        return {"kind": "a3m" if aln is not None else "fasta", "name": query.name, "residues": len(query.sequence),
                "alignment_rows": len(aln.rows) if aln is not None else 0}

    def features(self, query: Query, alignment: Alignment | None = None) -> dict:
        """AlphaFold's feature batch (numpy, trailing recycling axis)."""
        from xopt.models.openfold.features import make_batch, raw_features

        return make_batch(raw_features(query, alignment), int(self.cfg.get("msa_depth", 512)),
                          int(self.cfg.get("extra_msa_depth", 1024)), int(self.cfg.get("recycles", 3)), self.seed)

    def __call__(self, raw: Any) -> dict:
        """`raw`: a sequence string, a Query, or (Query, Alignment). Returns numpy results."""
        if isinstance(raw, str):
            raw = clean_sequence(raw)
        query, aln = raw if isinstance(raw, tuple) else (raw, None)
        batch = self.features(query, aln)
        result = self.session.fold(batch, **self.overrides) if self.onnx else self.folder(batch)
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
        from xopt.models.openfold.pdb import to_pdb

        return to_pdb(result, remark=self._remark(result))

    def _remark(self, result: dict) -> str:
        w = self.weights
        kind = "seeded-random weights (not a real prediction)" if w.get("kind") != "checkpoint" else "checkpoint"
        ptm = f", pTM {result['ptm']:.3f}" if "ptm" in result else ""
        return f"xopt openfold {self.cfg.get('preset')}, {kind}, mean pLDDT {float(np.mean(result['plddt'])):.1f}{ptm}"

    @classmethod
    def default_output(cls, src: Path, root: Path) -> Path:
        return Path(root) / f"{Path(src).stem}.pdb"

    def batch_target(self, src: Path, out_dir: Path) -> Path:
        return Path(out_dir) / f"{Path(src).stem}.pdb"  # one structure per FASTA/A3M file

    def outputs_for(self, src: Path, dst: Path) -> list[Path]:
        return [Path(dst)]

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
