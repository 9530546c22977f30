"""Model features for one chain: raw AlphaFold features in numpy, then OpenFold's own
FeaturePipeline (predict mode) for clustering, BERT-style MSA masking and the final tensors.

The raw step is written here rather than taken from `openfold.data.data_pipeline`: importing
that module drags in the template/mmCIF code, which needs biopython<=1.81 (`SCOPData`) and
numpy<2 (`np.object`). The arrays are the ones AlphaFold's `make_sequence_features` and
`make_msa_features` produce (checked against OpenFold's residue tables in the tests).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from xopt.models.openfold.seq import Alignment, Query

# AlphaFold's residue order for `aatype` (index 20 = X, unknown).
RESTYPES = "ARNDCQEGHILKMFPSTWYV"
RESTYPE_INDEX = {aa: i for i, aa in enumerate(RESTYPES)}
UNKNOWN = 20
# HHblits' alphabetical order for MSA rows (20 = X, 21 = gap); OpenFold remaps it.
HHBLITS = "ACDEFGHIKLMNPQRSTVWY"
HHBLITS_INDEX = {**{aa: i for i, aa in enumerate(HHBLITS)}, "X": 20, "-": 21}


def aatype_indices(sequence: str) -> np.ndarray:
    return np.array([RESTYPE_INDEX.get(c, UNKNOWN) for c in sequence], dtype=np.int64)


def raw_features(query: Query, alignment: Alignment | None = None) -> dict[str, np.ndarray]:
    """AlphaFold's unprocessed monomer features (no templates)."""
    seq = query.sequence
    n = len(seq)
    onehot = np.zeros((n, len(RESTYPES) + 1), dtype=np.int32)
    onehot[np.arange(n), aatype_indices(seq)] = 1
    rows = alignment.rows if alignment is not None else [seq]
    dels = alignment.deletions if alignment is not None else [[0] * n]
    if rows[0] != seq:
        raise ValueError("the alignment's first row must be the query")
    msa = np.array([[HHBLITS_INDEX[c] for c in row] for row in rows], dtype=np.int32)
    return {
        "aatype": onehot,
        "between_segment_residues": np.zeros(n, dtype=np.int32),
        "domain_name": np.array([query.name.encode("utf-8")], dtype=object),
        "residue_index": np.arange(n, dtype=np.int32),
        "seq_length": np.full(n, n, dtype=np.int32),
        "sequence": np.array([seq.encode("utf-8")], dtype=object),
        "msa": msa,
        "deletion_matrix_int": np.array(dels, dtype=np.int32),
        "num_alignments": np.full(n, len(rows), dtype=np.int32),
    }


def data_config(of_cfg, n_rows: int):
    """OpenFold's data config with MSA padding trimmed to what the alignment has.

    Predict mode pads the clustered MSA to `max_msa_clusters` rows and the extra MSA to
    `max_extra_msa` rows. Padded rows are fully masked and change no real output (every
    MSA operation masks them), so a single sequence does not need 512 + 1024 empty rows.
    """
    import copy

    data = copy.deepcopy(of_cfg.data)
    clusters = min(int(data.predict.max_msa_clusters), n_rows)
    data.predict.max_msa_clusters = clusters
    data.predict.max_extra_msa = max(1, min(int(data.predict.max_extra_msa), n_rows - clusters))
    return data


def process(raw: Mapping[str, np.ndarray], of_cfg, seed: int = 0) -> dict:
    """Model-ready torch tensors, each with a trailing recycling dimension."""
    import torch

    from openfold.data.feature_pipeline import FeaturePipeline

    n_rows = int(raw["msa"].shape[0])
    # predict mode masks 15 % of MSA positions BERT-style (torch's global RNG): seed it so a
    # sequence always gets the same features, without disturbing the caller's RNG.
    from xopt.models.openfold.cpu import quiet

    with torch.random.fork_rng(devices=[]), quiet():
        torch.manual_seed(int(seed))
        feats = FeaturePipeline(data_config(of_cfg, n_rows)).process_features(dict(raw), "predict")
    return dict(feats)
