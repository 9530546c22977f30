"""OpenFold runtime: input parsing (always runs), structure metrics (always), folding to PDB (openfold)."""
from __future__ import annotations

import numpy as np
import pytest

from xopt.errors import UserError
from xopt.models.openfold.metrics import ca_rmsd, gdt_ts, lddt_ca, structure_drift, superpose
from xopt.models.openfold.seq import clean_sequence, parse_a3m_text, parse_fasta_text, read_fasta

# ---------------------------------------------------------------- FASTA


def test_fasta_normalises_case_whitespace_and_stop():
    q = parse_fasta_text(">p1 some protein\nmkta yiak\nQRQ*\n")
    assert q.sequence == "MKTAYIAKQRQ" and q.name == "p1" and q.description == "p1 some protein"


def test_fasta_substitutions_are_reported():
    q = parse_fasta_text(">x\nACUOBZJX\n")
    assert q.sequence == "ACCKXXXX"
    assert any("U read as C" in n for n in q.notes) and any("B read as X" in n for n in q.notes)


def test_fasta_without_header_is_one_raw_sequence():
    assert parse_fasta_text("MKTAY\nIAK\n", "seq.fasta").sequence == "MKTAYIAK"


@pytest.mark.parametrize("text, needle", [
    (">a\nMK-TA\n", "gap"),
    (">a\nMK.TA\n", "gap"),
    (">a\nMK1TA\n", "'1' at position 3"),
    (">a\nMKTA\n>b\nMKTA\n", "2 records"),
    ("", "no sequence"),
    ("\n\n", "no sequence"),
    (">a\n\n", "empty sequence"),
    ("junk\n>a\nMKT\n", "before the first"),
    (">a\nXXXX\n", "only unknown"),
])
def test_fasta_rejects_bad_input(text, needle):
    with pytest.raises(UserError) as err:
        parse_fasta_text(text, "in.fasta")
    assert needle in str(err.value)


def test_fasta_file_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_fasta(tmp_path / "missing.fasta")
    bad = tmp_path / "bin.fasta"
    bad.write_bytes(b">a\n\xff\xfeMK\n")
    with pytest.raises(UserError, match="not UTF-8"):
        read_fasta(bad)


def test_clean_sequence_length_guard():
    with pytest.raises(UserError, match="residues"):
        clean_sequence("A" * 10_001)

# ---------------------------------------------------------------- A3M


def test_a3m_deletions_dedup_and_dots():
    aln = parse_a3m_text(">q\nMKTAY\n>h1\nMKabTA-\n>h2\nM.K.T.A.Y\n>dup\nMKTAY\n", query="MKTAY")
    assert aln.rows[0] == "MKTAY"
    # h1: 'ab' inserted before column 3 (T)
    assert aln.rows[1] == "MKTA-" and aln.deletions[1] == [0, 0, 2, 0, 0]
    assert len(aln.rows) == 2  # h2 ('.' ignored) and dup equal the query: dropped
    assert aln.names == ["q", "h1"]


@pytest.mark.parametrize("text, query, needle", [
    (">q\nMKTAY\n>h\nMKT\n", None, "match columns"),
    (">q\nMK-AY\n", None, "has gaps"),
    (">q\nMKTAY\n", "MKTAW", "differs from the FASTA query"),
    (">q\nMKTAY\n>h\nMK1AY\n", None, "not a residue"),
    ("", None, "no alignment rows"),
])
def test_a3m_rejects_bad_alignments(text, query, needle):
    with pytest.raises(UserError) as err:
        parse_a3m_text(text, query=query)
    assert needle in str(err.value)

# ---------------------------------------------------------------- metrics


def _coil(n=40, seed=0):
    rng = np.random.default_rng(seed)
    steps = rng.normal(size=(n, 3))
    steps *= 3.8 / np.linalg.norm(steps, axis=1, keepdims=True)  # C-alpha spacing
    return np.cumsum(steps, axis=0)


def _rotation(seed=1):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


def test_identical_structures_score_perfectly():
    x = _coil()
    assert ca_rmsd(x, x) == pytest.approx(0.0, abs=1e-9)
    assert lddt_ca(x, x) == pytest.approx(1.0)
    assert gdt_ts(x, x) == pytest.approx(100.0)


def test_rigid_motion_is_invisible():
    x = _coil()
    y = x @ _rotation().T + np.array([10.0, -4.0, 3.0])
    assert ca_rmsd(x, y) == pytest.approx(0.0, abs=1e-6)
    assert lddt_ca(x, y) == pytest.approx(1.0)
    assert gdt_ts(x, y) == pytest.approx(100.0)
    assert np.allclose(superpose(x, y), x, atol=1e-6)


def test_mirror_image_is_not_superposable():
    x = _coil()
    assert ca_rmsd(x, x * np.array([1.0, 1.0, -1.0])) > 1.0


def test_metrics_degrade_with_noise_and_rmsd_matches_known_shift():
    x = _coil(60)
    rng = np.random.default_rng(3)
    small, large = x + rng.normal(scale=0.3, size=x.shape), x + rng.normal(scale=3.0, size=x.shape)
    assert ca_rmsd(x, small) < ca_rmsd(x, large)
    assert lddt_ca(x, small) > lddt_ca(x, large)
    assert gdt_ts(x, small) > gdt_ts(x, large)
    # moving one residue of n by d (after refitting) gives at most d/sqrt(n)
    y = x.copy()
    y[0] += np.array([6.0, 0, 0])
    assert 0 < ca_rmsd(x, y) <= 6.0 / np.sqrt(len(x)) + 1e-9
    # the mask removes the moved residue entirely
    mask = np.ones(len(x), bool)
    mask[0] = False
    assert ca_rmsd(x, y, mask) == pytest.approx(0.0, abs=1e-9)


def test_structure_drift_terms():
    x = _coil()
    d = structure_drift(x, x, np.full(len(x), 70.0), np.full(len(x), 68.5))
    assert d["ca_rmsd"] == pytest.approx(0, abs=1e-9) and d["plddt_mean_abs_diff"] == pytest.approx(1.5)

# ---------------------------------------------------------------- folding (needs OpenFold)


@pytest.fixture(scope="module")
def pipe():
    from xopt.models.openfold import SPEC
    from xopt.models.openfold.pipeline import OpenFoldPipeline

    return OpenFoldPipeline(None, {**SPEC.config("tiny"), "weights": {"kind": "seeded-random", "seed": 0}})


@pytest.mark.openfold
def test_raw_feature_tables_match_openfold():
    from xopt.models.openfold.cpu import import_openfold
    from xopt.models.openfold import features as f

    import_openfold()
    from openfold.np import residue_constants as rc

    assert "".join(rc.restypes) == f.RESTYPES
    assert rc.unk_restype_index == f.UNKNOWN
    for aa, idx in f.MSA_INDEX.items():  # HHblits letters as OpenFold maps them into its own order
        assert rc.MAP_HHBLITS_AATYPE_TO_OUR_AATYPE[rc.HHBLITS_AA_TO_ID[aa]] == idx


@pytest.mark.openfold
def test_fold_writes_pdb_with_plddt_bfactors(pipe, tmp_path):
    from Bio.PDB import PDBParser

    src = tmp_path / "q.fasta"
    src.write_text(">q test\nMKTAYIAKQRQISFVKSHFSRQLEERLGLIEV\n")
    dst = tmp_path / "q.pdb"
    assert pipe.process_file(src, dst) == [dst]
    structure = PDBParser(QUIET=True).get_structure("q", str(dst))
    residues = list(structure.get_residues())
    assert len(residues) == 32 and residues[0].get_resname() == "MET"
    ca = np.array([r["CA"].coord for r in residues])
    assert np.linalg.norm(ca - ca.mean(0), axis=1).max() > 1.0, "C-alphas collapsed (zero-initialised weights?)"
    for r in residues:
        b = {a.get_bfactor() for a in r}
        assert len(b) == 1 and 0.0 <= b.pop() <= 100.0  # one pLDDT per residue on every atom
    with pytest.raises(UserError, match="exists"):
        pipe.process_file(src, dst)


@pytest.mark.openfold
def test_fold_with_alignment_and_session_trunk(pipe, tmp_path):
    from xopt.models.openfold.trunk import make_trunk
    from xopt.models.openfold.fold import Folder
    from xopt.models.openfold.pipeline import read_input

    a3m = tmp_path / "q.a3m"
    a3m.write_text(">q\nMKTAYIAKQRQISF\n>h1\nMKTAwYIAKQ-QISF\n>h2\nMRTAYLAKQRQ-SF\n")
    query, aln = read_input(a3m)
    assert len(aln.rows) == 3 and query.sequence == "MKTAYIAKQRQISF"
    feats = pipe.features(query, aln)
    assert feats["msa_feat"].shape[0] == 3  # clusters trimmed to the alignment depth

    class NumpySession:  # a Session-shaped wrapper around the exported module's torch twin
        def __init__(self, module):
            self.module = module

        def run(self, feeds):
            from xopt.runtime.backends.torch_eager import torch_outputs

            return torch_outputs(self.module, feeds, ["m_out", "z_out", "s"])

    from xopt.models.openfold.fold import session_trunk

    ref = pipe.folder(feats)
    session = NumpySession(make_trunk(pipe.model.evoformer, {}))
    other = Folder(pipe.model, pipe.of_cfg, trunk=session_trunk(session))(feats)
    assert np.abs(ref["final_atom_positions"] - other["final_atom_positions"]).max() < 1e-3
    assert np.abs(ref["plddt"] - other["plddt"]).max() < 1e-2


@pytest.mark.openfold
def test_fold_matches_openfold_forward(pipe):
    import torch

    from xopt.models.openfold.seq import Query

    from xopt.models.openfold.fold import torch_batch

    feats = pipe.features(Query("q", "MKTAYIAKQRQISFVK"))
    ours = pipe.folder(feats)
    with torch.no_grad():
        theirs = pipe.model(torch_batch(feats))
    assert np.abs(ours["final_atom_positions"] - theirs["final_atom_positions"].numpy()).max() < 1e-4
    assert np.abs(ours["plddt"] - theirs["plddt"].numpy()).max() < 1e-3
