"""OpenFold against reference structures: RMSD/GDT-TS/lDDT/TM-score with known answers, residue
matching across gaps and tags, the dataset layout and its errors, the label-free checks, and
`xopt eval openfold` on saved predictions and (openfold marker) with the model."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("Bio")
pytest.importorskip("tmtools")

from xopt.errors import UserError  # noqa: E402
from xopt.models.openfold import checks as lf  # noqa: E402
from xopt.models.openfold.evaluate import read_dataset  # noqa: E402
from xopt.models.openfold.groundtruth import compare, gdt, matched  # noqa: E402
from xopt.models.openfold.structures import Chain, read_chains  # noqa: E402

THREE = {"A": "ALA", "R": "ARG", "N": "ASN", "D": "ASP", "C": "CYS", "Q": "GLN", "E": "GLU", "G": "GLY", "H": "HIS",
         "I": "ILE", "L": "LEU", "K": "LYS", "M": "MET", "F": "PHE", "P": "PRO", "S": "SER", "T": "THR", "W": "TRP",
         "Y": "TYR", "V": "VAL"}
SEQ = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVVHSLAKWKRQTLGQHDFSAGEGLYTHMKALRPDEDRLSPLHSVYVDQWDWERVMGDGERQFSTLKSTVEAIWAGIKATEAAVSEEFGLAPFLPDQIHFVHSQELLSRYPDLDAKGRERAIAKDLGAVFLVGIGGKLSDGHRHDVRAPDYDDWSTPSELGHAGLNGDILVWNPVLEDAFELSSMGIRVDADTLKHQLALTGDEDRLELEWHQALLRGEMPQTIGGGIGQSRLTMLLLQLPHIGQVQAGVWPAAVRESVPALL"[:120]


def helix(n: int) -> np.ndarray:
    """An ideal alpha-helix C-alpha trace: 2.3 A radius, 1.5 A rise, 100 degrees per residue (3.8 A steps)."""
    t = np.arange(n) * np.deg2rad(100.0)
    return np.c_[2.3 * np.cos(t), 2.3 * np.sin(t), 1.5 * np.arange(n)]


def rotation(a, b, c) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_euler("xyz", [a, b, c], degrees=True).as_matrix()


def write_ca_pdb(path, seq, ca, chain="A", start=1, bfactor=50.0, resnames=None) -> None:
    lines = []
    for i, (a, (x, y, z)) in enumerate(zip(seq, ca)):
        name = (resnames or {}).get(i, THREE[a])
        record = "HETATM" if name == "MSE" else "ATOM  "
        lines.append(f"{record}{i + 1:5d}  CA  {name} {chain}{start + i:4d}    {x:8.3f}{y:8.3f}{z:8.3f}  1.00"
                     f"{bfactor:6.2f}           C")
    path.write_text("\n".join(lines) + "\nEND\n")


def _chain(seq, ca, b=50.0):
    return Chain("x", seq, np.asarray(ca, float), np.arange(1, len(seq) + 1), np.full(len(seq), b))


# ---------------------------------------------------------------- known answers

def test_identical_structure_after_a_rigid_motion_scores_perfectly():
    ca = helix(60)
    moved = ca @ rotation(30, -40, 75).T + [12.0, -7.0, 3.0]
    s = compare(_chain(SEQ[:60], moved), _chain(SEQ[:60], ca))
    assert s["ca_rmsd"] == pytest.approx(0.0, abs=1e-4) and s["gdt_ts"] == 100.0
    assert s["lddt_ca"] == pytest.approx(1.0) and s["tm_score"] == pytest.approx(1.0, abs=1e-4)


def test_perturbed_structure_gives_the_expected_rmsd_and_a_consistent_gdt():
    """Gaussian noise of sigma per axis: RMSD after superposition ~ sigma*sqrt(3) (minus the six degrees
    of freedom the fit absorbs) and each residue's deviation is Maxwell-distributed, so GDT-TS is the mean
    of the Maxwell CDF at 1/2/4/8 A; the search may only find superpositions at least that good."""
    from scipy.stats import maxwell

    n, sigma = 400, 1.0
    ca = helix(n)
    rng = np.random.default_rng(7)
    pred = (ca + rng.normal(0, sigma, ca.shape)) @ rotation(10, 120, -35).T + [4.0, 40.0, -9.0]
    s = compare(_chain(SEQ[:1] * n, pred), _chain(SEQ[:1] * n, ca))
    expected = sigma * np.sqrt(3.0 * (n - 2) / n)
    assert s["ca_rmsd"] == pytest.approx(expected, rel=0.05)
    maxwell_gdt = 100 * np.mean([maxwell.cdf(c / sigma) for c in (1, 2, 4, 8)])
    assert maxwell_gdt - 2.0 <= s["gdt_ts"] <= maxwell_gdt + 4.0
    assert 0.5 < s["tm_score"] < 1.0 and 0.5 < s["lddt_ca"] < 0.9


def test_gdt_search_finds_a_domain_a_single_superposition_misses():
    ca = helix(80)
    pred = ca.copy()
    pred[40:] = ca[40:] @ rotation(0, 0, 60).T + [15.0, 0, 0]  # second half moved as a rigid body
    per = gdt(ca, pred)
    assert per[1.0] >= 0.5  # either half alone fits within 1 A under its own superposition


def test_residues_are_matched_across_missing_loops_and_tags():
    seq = SEQ[:50]
    ref_seq = "HHHHHH" + seq[:20] + seq[30:]  # a His tag, and residues 20-29 unresolved
    pi, ri, (gp, gr) = matched(seq, ref_seq)
    assert len(pi) == 40 and list(pi[:20]) == list(range(20)) and list(ri[:20]) == list(range(6, 26))
    assert gp.replace("-", "") == seq and gr.replace("-", "") == ref_seq and len(gp) == len(gr)
    ca = helix(50)
    ref_ca = np.concatenate([helix(6) + 100, ca[:20], ca[30:]])
    s = compare(_chain(seq, ca), _chain(ref_seq, ref_ca))
    assert s["ca_rmsd"] == pytest.approx(0.0, abs=1e-4) and s["coverage"] == pytest.approx(40 / 46)


# ---------------------------------------------------------------- files and layout

def test_reading_a_ca_only_reference_with_a_modified_residue_and_two_chains(tmp_path):
    seq = SEQ[:30]
    write_ca_pdb(tmp_path / "a.pdb", seq, helix(30), resnames={0: "MSE"})
    text = (tmp_path / "a.pdb").read_text().replace("END\n", "")
    write_ca_pdb(tmp_path / "b.pdb", "GGGGGGGGGG", helix(10), chain="B")
    (tmp_path / "ab.pdb").write_text(text + (tmp_path / "b.pdb").read_text())
    chains = read_chains(tmp_path / "ab.pdb")
    assert [c.name for c in chains] == ["A", "B"] and chains[0].sequence == seq  # MSE read as M
    from xopt.models.openfold.structures import best_chain

    assert best_chain(chains, seq).name == "A" and best_chain(chains, seq, "B").name == "B"
    with pytest.raises(UserError, match="no chain 'C'"):
        best_chain(chains, seq, "C", "ab.pdb")


def test_unreadable_structure_is_named(tmp_path):
    (tmp_path / "x.cif").write_text("data_x\n_this is not mmcif\n")
    with pytest.raises(UserError, match="x.cif"):
        read_chains(tmp_path / "x.cif")
    (tmp_path / "w.pdb").write_text("HETATM    1  O   HOH A   1       0.000   0.000   0.000  1.00  0.00           O\n")
    with pytest.raises(UserError, match="no protein residues"):
        read_chains(tmp_path / "w.pdb")


def _dataset(root, names=("t1", "t2"), n=40):
    root.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        seq = SEQ[k:k + n]
        (root / f"{name}.fasta").write_text(f">{name}\n{seq}\n")
        write_ca_pdb(root / f"{name}.pdb", seq, helix(n))
    return root


def test_dataset_pairs_by_name_and_names_what_is_missing(tmp_path):
    ds = read_dataset(_dataset(tmp_path), {})
    assert [i.name for i in ds.items] == ["t1", "t2"] and "TM-align" in ds.method
    (tmp_path / "t3.fasta").write_text(">t3\nMKT\n")
    with pytest.raises(UserError, match="1 queries have no reference structure .*t3"):
        read_dataset(tmp_path, {})
    assert len(read_dataset(tmp_path, {"skip_missing": True}).items) == 2


# ---------------------------------------------------------------- label-free checks

def test_checks_pass_an_ideal_backbone_and_flag_a_broken_one():
    good = _chain(SEQ[:50], helix(50), b=85.0)
    assert all(c["ok"] for c in lf.chain_checks(good)), lf.chain_checks(good)
    nm = _chain(SEQ[:50], helix(50) / 10.0, b=30.0)  # coordinates in nm, low confidence
    bad = {c["name"]: c for c in lf.chain_checks(nm, {"weights": {"kind": "seeded-random"}})}
    assert not bad["consecutive C-alpha distance"]["ok"] and "Angstrom" in bad["consecutive C-alpha distance"]["message"]
    assert not bad["pLDDT mean"]["ok"] and "seeded-random" in bad["pLDDT mean"]["message"]
    assert not bad["steric clashes"]["ok"] and bad["steric clashes"]["count"] > 0


# ---------------------------------------------------------------- xopt eval openfold

def _xopt(*args, cwd):
    return subprocess.run([sys.executable, "-m", "xopt.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "COLUMNS": "250"}, timeout=900)


def test_eval_predictions_mode_scores_saved_structures(tmp_path):
    root = _dataset(tmp_path / "ds")
    pred = tmp_path / "pred"
    pred.mkdir()
    rng = np.random.default_rng(0)
    for k, name in enumerate(("t1", "t2")):
        ca = helix(40) @ rotation(20, 30, 40).T + rng.normal(0, 0.5 * k, (40, 3))
        write_ca_pdb(pred / f"{name}.pdb", SEQ[k:k + 40], ca, bfactor=90.0)
    r = _xopt("eval", "openfold", str(root), "--predictions", str(pred), "--out", str(tmp_path / "rep"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    items = {i["name"]: i["metrics"] for i in rep["results"][0]["items"]}
    assert items["t1"]["ca_rmsd"] == pytest.approx(0.0, abs=1e-3) and items["t1"]["gdt_ts"] == 100.0
    assert 0.3 < items["t2"]["ca_rmsd"] < 1.2 and items["t2"]["tm_score"] < 1.0
    assert rep["results"][0]["aggregate"]["plddt_mean"] == pytest.approx(90.0)
    (pred / "t2.pdb").unlink()
    r = _xopt("eval", "openfold", str(root), "--predictions", str(pred), "--out", str(tmp_path / "rep2"), cwd=tmp_path)
    assert r.returncode == 1 and "t2.pdb" in r.stderr


@pytest.mark.openfold
def test_eval_with_the_model_and_its_checks(tmp_path):
    from xopt.export.pipeline import export_model

    art = tmp_path / "art"
    export_model("openfold", ["fp32"], out_dir=art, config="tiny")
    root = _dataset(tmp_path / "ds", names=("t1",), n=16)
    r = _xopt("eval", "openfold", str(root), "--artifacts", str(art), "--out", str(tmp_path / "rep"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    res = rep["results"][0]
    assert rep["weights"]["kind"] == "seeded-random" and np.isfinite(res["aggregate"]["ca_rmsd"])
    assert 0.0 <= res["aggregate"]["tm_score"] <= 1.0 and 0.0 <= res["aggregate"]["plddt_mean"] <= 100.0
    assert {c["name"] for c in res["items"][0]["checks"]} == {"pLDDT mean", "consecutive C-alpha distance",
                                                               "steric clashes"}
    r = _xopt("run", "openfold", str(root / "t1.fasta"), "-o", str(tmp_path / "t1.pdb"), "--artifacts", str(art),
              cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "xopt: warning: pLDDT mean" in r.stderr or "xopt: warning: consecutive" in r.stderr


def _atom37_result(n=30):
    from xopt.models.openfold.structures import ATOM37

    pos = np.zeros((n, 37, 3))
    mask = np.zeros((n, 37))
    ca = helix(n)
    for name, offset in (("N", [-1.2, 0.6, 0.0]), ("CA", [0, 0, 0]), ("C", [1.2, 0.6, 0.0])):
        pos[:, ATOM37.index(name)] = ca + np.asarray(offset) * 0.9
        mask[:, ATOM37.index(name)] = 1
    return {"final_atom_positions": pos, "final_atom_mask": mask, "plddt": np.full(n, 88.0),
            "aatype": np.zeros(n, int), "residue_index": np.arange(n)}


def test_checks_hook_reads_a_pipeline_result_without_openfold():
    """The array-level hook `xopt profile` calls: (query, OpenFold result dict, info) -> checks."""
    checks = {c["name"]: c for c in lf.checks(None, _atom37_result(), {})}
    assert checks["pLDDT mean"]["ok"] and checks["pLDDT mean"]["value"] == pytest.approx(88.0)
    assert checks["consecutive C-alpha distance"]["ok"]
    assert checks["steric clashes"]["unit"].startswith("heavy-atom")


@pytest.mark.openfold
def test_atom37_layout_matches_openfold():
    from openfold.np import residue_constants as rc

    from xopt.models.openfold.structures import ATOM37, RESTYPES

    assert tuple(rc.atom_types) == ATOM37 and "".join(rc.restypes_with_x) == RESTYPES


def _shipped(name):
    """Experimental structures that the tmtools wheel ships (PDB 2GTL, a 15-chain assembly)."""
    import tmtools
    from pathlib import Path

    return Path(tmtools.__file__).parent / "data" / name


def test_real_structure_passes_the_checks_and_two_copies_score_as_tm_align_says():
    import tmtools

    chains = read_chains(_shipped("2gtl.cif"))
    a = chains[0]
    assert len(chains) == 15 and len(a.sequence) == 147
    checks = {c["name"]: c for c in lf.chain_checks(a, plddt=False)}
    assert checks["consecutive C-alpha distance"]["ok"] and checks["consecutive C-alpha distance"]["value"] == \
        pytest.approx(3.8, abs=0.05)
    assert checks["steric clashes"]["count"] == 0
    e = [c for c in chains if c.name == "E"][0]  # the same subunit, another copy in the crystal
    s = compare(e, a)
    free = tmtools.tm_align(e.ca, a.ca, e.sequence, a.sequence)  # TM-align's own alignment, unconstrained
    assert s["identity"] == 1.0 and s["ca_rmsd"] < 2.0
    assert s["tm_score"] == pytest.approx(free.tm_norm_chain2, abs=0.02)
    from xopt.models.openfold.structures import best_chain

    assert best_chain(read_chains(_shipped("2gtl.pdb")), chains[12].sequence).name == chains[12].name
