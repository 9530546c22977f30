"""OpenFold against reference structures (`xopt eval openfold`): the spec's EvalHooks.

DATA holds <name>.fasta (.fa, .faa) or <name>.a3m queries with <name>.pdb (.ent, .cif,
.mmcif) references, paired by name. A reference may be C-alpha only. The chain scored is
`--chain ID` or the one whose sequence aligns best to the query. Scores: groundtruth.py;
the aggregate is the mean over targets (CASP-style averages).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from xopt.errors import UserError
from xopt.spec import EvalDataset, EvalItem

QUERY_SUFFIXES = (".fasta", ".fa", ".faa", ".a3m")
IDENTITY_MIN = 0.9
KEYS = ("ca_rmsd", "gdt_ts", "lddt_ca", "tm_score", "coverage", "identity", "plddt_mean")


def method() -> str:
    from importlib.metadata import PackageNotFoundError, version

    def v(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return "(not installed)"

    return (f"C-alphas matched by global alignment (Biopython {v('biopython')} PairwiseAligner, BLOSUM62); "
            "ca_rmsd after superposition (Bio.SVDSuperimposer), GDT-TS by the TM-score program's fragment-seeded "
            f"superposition search, global lDDT-Ca (15 A radius), TM-score normalised by the reference from "
            f"TM-align's code held to the alignment (tmtools {v('tmtools')}); mean over targets")


def _by_name(folder: Path, suffixes) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.suffix.lower() in suffixes:
            if f.stem in out:
                raise UserError(f"{folder} holds two files for {f.stem} ({out[f.stem].name}, {f.name})",
                                "keep one query and one reference per name")
            out[f.stem] = f
    return out


def _unpaired(kind: str, names, where: Path, skip: bool, notes: list) -> None:
    if not names:
        return
    names = sorted(names)
    text = f"{len(names)} {kind} in {where}: {', '.join(names[:8])}" + (f" and {len(names) - 8} more"
                                                                         if len(names) > 8 else "")
    if not skip:
        raise UserError(text, "add the missing files, or pass --skip-missing to score the complete pairs only")
    notes.append(f"skipped {text}")


def read_dataset(data, options: Mapping[str, str | None]) -> EvalDataset:
    from xopt.models.openfold.structures import STRUCTURE_SUFFIXES

    opts = dict(options or {})
    if data is None:
        raise UserError("no dataset given", "pass DATA: a folder of NAME.fasta (or .a3m) with NAME.pdb (or .cif)")
    root = Path(data)
    if not root.is_dir():
        raise UserError(f"dataset {root} is not a directory", "pass the folder holding the queries and references")
    skip, notes = bool(opts.get("skip_missing")), []
    queries, refs = _by_name(root, QUERY_SUFFIXES), _by_name(root, STRUCTURE_SUFFIXES)
    if not queries:
        raise UserError(f"{root} holds no queries ({', '.join(QUERY_SUFFIXES)})", "put NAME.fasta beside NAME.pdb")
    _unpaired("queries have no reference structure", set(queries) - set(refs), root, skip, notes)
    _unpaired("reference structures have no query", set(refs) - set(queries), root, skip, notes)
    items = [EvalItem(n, queries[n], refs[n], {"chain": opts.get("chain")}) for n in sorted(set(queries) & set(refs))]
    return EvalDataset(f"queries with reference structures ({root}, {len(items)} targets)", items, notes, method())


def predict(pipeline, item) -> dict:
    from xopt.models.openfold.pipeline import read_input
    from xopt.models.openfold.structures import from_prediction

    query, aln = read_input(item.input)
    result = pipeline((query, aln))
    return {"chain": from_prediction(result, item.name), "notes": list(getattr(query, "notes", []) or [])}


def prediction_paths(directory: Path, item) -> list[Path]:
    """DIR/<name>.pdb (what `xopt run openfold` writes), or .cif."""
    from xopt.models.openfold.structures import STRUCTURE_SUFFIXES

    found = [Path(directory) / f"{item.name}{s}" for s in STRUCTURE_SUFFIXES if (Path(directory) / f"{item.name}{s}").is_file()]
    return found[:1] or [Path(directory) / f"{item.name}.pdb"]


def read_prediction(directory: Path, item) -> dict:
    from xopt.models.openfold.checks import plddt_from_bfactors
    from xopt.models.openfold.pipeline import read_input
    from xopt.models.openfold.structures import best_chain, read_chains

    path = prediction_paths(directory, item)[0]
    query, _ = read_input(item.input)
    notes: list[str] = []
    chain = best_chain(read_chains(path), query.sequence, None, str(path))
    return {"chain": plddt_from_bfactors(chain, notes), "notes": notes}


def _reference(item, query_seq: str):
    from xopt.models.openfold.structures import best_chain, read_chains

    return best_chain(read_chains(item.reference), query_seq, item.meta.get("chain"), str(item.reference))


def score(item, output: Mapping[str, Any]) -> dict:
    from xopt.models.openfold.groundtruth import compare

    pred = output["chain"]
    ref = _reference(item, pred.sequence)
    s = compare(pred, ref)
    notes = list(output.get("notes", []))
    if s["identity"] < IDENTITY_MIN:
        notes.append(f"{item.name}: only {100 * s['identity']:.0f} % of aligned residues are identical to "
                     f"reference chain {ref.name}: is it the right reference (or pass --chain)?")
    if s["coverage"] < 1.0:
        notes.append(f"{item.name}: {s['aligned']} of {len(ref.sequence)} reference residues matched")
    if len(pred.bfactor):
        s["plddt_mean"] = float(np.mean(pred.bfactor))
    return {**s, "notes": notes}


def aggregate(scores: list[dict]) -> dict:
    out = {}
    for k in KEYS:
        vals = np.array([s[k] for s in scores if k in s], np.float64)
        vals = vals[np.isfinite(vals)]
        if vals.size:
            out[k] = float(vals.mean())
    return out


def item_checks(item, output: Mapping[str, Any], info: Mapping[str, Any] | None = None) -> list[dict]:
    from xopt.models.openfold.checks import chain_checks

    return chain_checks(output["chain"], info)
