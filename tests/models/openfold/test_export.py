"""OpenFold spec: torch-free import, CPU softmax fallback, seeded weights, export of the main
graph and every op graph with parity at unseen shapes, precision islands, NaN localisation,
fit maths and the chunk chooser."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from xopt.errors import BudgetError, UserError
import xopt.models.openfold as of

# ---------------------------------------------------------------- no openfold needed


def test_spec_module_imports_without_torch():
    code = ("import sys, xopt.models.openfold as m; "
            "assert 'torch' not in sys.modules and 'openfold' not in sys.modules, sorted(sys.modules); "
            "print(m.SPEC.covers)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "evoformer trunk" in out.stdout


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_cpu_softmax_fallback_matches_torch(dtype):
    import torch

    from xopt.models.openfold.cpu import softmax_inplace_

    g = torch.Generator().manual_seed(0)
    x = (torch.randn(3, 4, 5, 33, generator=g) * 20).to(getattr(torch, dtype))
    x[0, 0, 0, :7] = -1e4  # masked logits, as OpenFold's mask bias makes them
    want = torch.softmax(x.float(), dim=-1)
    a = x.clone()
    ptr = a.data_ptr()
    out = softmax_inplace_(a, rows=3 * 4 * 5, cols=33)
    assert out.data_ptr() == ptr == a.data_ptr(), "must write in place"
    tol = 1e-6 if dtype == "float32" else 1e-2
    assert torch.allclose(a.float(), want, atol=tol)
    assert torch.allclose(a.float().sum(-1), torch.ones(3, 4, 5), atol=tol)
    with pytest.raises(ValueError):
        softmax_inplace_(x.clone(), rows=7, cols=33)
    with pytest.raises(ValueError, match="contiguous"):
        softmax_inplace_(x.clone().transpose(-1, -2))


def test_cpu_softmax_backward_matches_autograd():
    import torch

    from xopt.models.openfold.cpu import softmax_backward_

    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 6, 9, generator=g, requires_grad=True)
    v = torch.randn(2, 9, 4, generator=g)
    d_o = torch.randn(2, 6, 4, generator=g)
    (torch.softmax(logits, -1) @ v).backward(d_o)
    s = torch.softmax(logits.detach(), -1).contiguous()
    softmax_backward_(s, d_o, v, 12, 9, 4)
    assert torch.allclose(s, logits.grad, atol=1e-5)


def test_fit_maths_recovers_a_known_curve():
    from xopt.fitting import largest_within
    from xopt.models.openfold.budget import eval_curve, fit_curve

    ns = [16, 24, 32, 48, 64]
    true = lambda n: 5 + 0.01 * n ** 2 + 4e-4 * min(8, n) * n ** 2  # noqa: E731  (chunk 8)
    coef = fit_curve(ns, [true(n) for n in ns], 8, "memory")
    for n in (100, 500, 2000):  # beyond the chunk the k*N^2 term is 8*N^2, not N^3
        assert eval_curve(coef, n, 8, "memory") == pytest.approx(true(n), rel=1e-3)
    assert largest_within(lambda n: n * n, 10_000.0, 16384) == 100
    assert largest_within(lambda n: 1e9, 10.0, 16384) == 0


def _fit(chunk, storage, measured, extrapolated):
    return {"chunk_size": chunk, "attn_chunk_size": chunk and chunk // 16, "storage": storage,
            "measured": [{"n": n, "whole_mb": mb, "fits": mb <= 10_000} for n, mb in measured],
            "max_residues_extrapolated": extrapolated}


def test_chunk_chooser_prefers_measured_points_then_the_fastest_setting():
    from xopt.models.openfold.budget import choose, fits_residues

    fits = {"unchunked": _fit(None, "fp32", [(256, 3000)], 600),
            "c128": _fit(128, "fp32", [(1024, 4000), (2500, 12_000)], 2600),
            "c64-fp16": _fit(64, "fp16", [(1024, 2500), (2500, 7000)], 3100)}
    # a measured point beats an extrapolation: unchunked extrapolates to 600, c128 was measured at 1024
    assert choose(fits, 500)["variant"] == "c128"
    assert choose({"unchunked": fits["unchunked"]}, 500)["basis"] == "extrapolated: up to 600"
    c = choose(fits, 1000)
    assert c["variant"] == "c128" and c["basis"].startswith("measured at N=1024")
    # c128 extrapolates to 2600 but its measured 2500 point is over budget: the measurement wins
    assert fits_residues(fits["c128"], 2500)[0] is False
    c = choose(fits, 2500)
    assert c["variant"] == "c64-fp16" and c["storage"] == "fp16" and "7000 MB" in c["basis"]
    assert choose(fits, 3000)["variant"] == "c64-fp16"  # beyond the measurements: extrapolated 3100
    with pytest.raises(BudgetError, match="no measured setting fits"):
        choose(fits, 4000)


def test_chunk_option_values():
    from xopt.models.openfold.budget import chunk_options

    assert chunk_options("64", None) == {"chunk_size": 64, "attn_chunk_size": 4}
    assert chunk_options("none", None) == {"chunk_size": None, "attn_chunk_size": None}
    for bad in ("abc", "-4", "lma"):
        with pytest.raises(UserError):
            chunk_options(bad, None)


def test_trunk_settings_resolve_host_loop_knobs():
    from xopt.models.openfold import trunk_settings

    assert trunk_settings({"chunk_size": None}) == {"precision": "fp32", "chunk_size": None, "attn_chunk_size": None,
                                                    "storage": "fp32"}
    s = trunk_settings({"chunked": True, "variant_chunk_size": 64, "variant_attn_chunk_size": 4, "precision": "fp16"})
    assert (s["chunk_size"], s["attn_chunk_size"], s["precision"]) == (64, 4, "fp16")
    assert trunk_settings({"chunk_size": 8})["attn_chunk_size"] == 8
    with pytest.raises(UserError, match="storage"):
        trunk_settings({"storage": "int8"})

# ---------------------------------------------------------------- openfold


@pytest.fixture(scope="module")
def tiny():
    from xopt.models.openfold import SPEC

    return SPEC.build(config=SPEC.config("tiny"), seed=0)


@pytest.mark.openfold
def test_cpu_fallback_installed_only_without_cuda(tiny):
    import torch

    from openfold.model import structure_module
    from openfold.utils.kernel import attention_core

    from xopt.models.openfold.cpu import fallback_active

    shimmed = getattr(structure_module.attn_core_inplace_cuda, "xopt_shim", False)
    assert shimmed == (not torch.cuda.is_available()) == fallback_active()
    assert attention_core.attn_core_inplace_cuda is structure_module.attn_core_inplace_cuda or torch.cuda.is_available()


@pytest.mark.openfold
def test_seeded_weights_are_representative_and_reproducible(tiny):
    import torch

    from xopt.models.openfold.network import build_alphafold

    model = tiny.extra["model"]
    zero = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and not torch.any(m.weight)]
    assert not zero, f"zero-initialised layers left: {zero[:3]}"
    assert tiny.weights.kind == "seeded-random" and tiny.weights.seed == 0
    again, _, _ = build_alphafold(tiny.config, seed=0)
    other, _, _ = build_alphafold(tiny.config, seed=1)
    a, b, c = (m.evoformer.blocks[0].msa_att_row.mha.linear_q.weight for m in (model, again, other))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.openfold
def test_export_writes_every_graph_with_parity_at_unseen_shapes(tiny_export):
    m = tiny_export
    assert m.covers.startswith("evoformer trunk; with its graphs the whole model")
    fp32 = m.variant("fp32")
    assert [i["shape"] for i in fp32["inputs"]][:2] == [["S", "N", 32], ["N", "N", 16]]
    assert fp32["parity"]["passed"] and fp32["parity"]["feeds"] == 2
    names = {g["name"] for g in fp32["graphs"]}
    for kind in ("row_bias", "row_att", "col_att", "msa_trans", "opm_proj", "opm_rows", "tm_proj", "tm_tile",
                 "ta_bias", "ta_rows", "pair_trans"):
        assert {f"evo.{kind}", f"extra.{kind}"} <= names
    assert {"embed_msa", "embed_pair", "embed_m_prev", "embed_extra", "single", "sm_pair", "sm_init", "ipa_rows",
            "sm_update", "sm_final", "ptm_rows"} <= names
    for g in fp32["graphs"]:
        assert (m.directory / g["path"]).is_file() and g["parity"]["feeds"] == 2, g["name"]
        assert g["parity"]["max_abs"] < 1e-3, (g["name"], g["parity"]["max_abs"])
    row_att = next(g for g in fp32["graphs"] if g["name"] == "evo.row_att")
    assert [i["shape"] for i in row_att["inputs"]] == [[1], ["K", "N", 32], ["K", "N"], [4, "N", "N"]]
    assert m.variant("fp16")["parity"]["outputs"]["z_out"]["mean_abs"] < 5e-3
    chunk = m.variant("fp32-chunk")
    assert chunk["export_config"] == {"precision": "fp32", "chunked": True}
    assert chunk["settings"]["chunk_size"] == 4 and chunk["settings"]["graph_meta"]["blocks"] == {"evo": 2, "extra": 1}
    # the host-driven trunk was gated as xopt.runtime.load assembles it (N=24, 20: 5-6 chunks)
    assert chunk["parity"]["assembled"]["max_abs"] < 1e-4


@pytest.mark.openfold
def test_chunked_trunk_matches_unchunked_in_torch(tiny):
    import torch

    from xopt.models.openfold.inputs import embedded_feed
    from xopt.models.openfold.trunk import make_trunk

    feed, _ = embedded_feed(tiny.extra["model"], 5, 27, seed=3, pad_msa=1, pad_res=3)  # N = 30
    args = [torch.from_numpy(feed[k]) for k in ("m", "z", "msa_mask", "pair_mask")]
    evo = tiny.extra["model"].evoformer
    with torch.no_grad():
        ref = make_trunk(evo, {})(*[a.clone() for a in args])
        m, z, s = evo(*[a.clone() for a in args], chunk_size=None, _mask_trans=False)  # OpenFold's own stack
        assert torch.allclose(ref[1], z * args[3][..., None], atol=1e-6) and torch.allclose(ref[2][:27], s[:27])
        cases = [({"chunk_size": 4, "tri_mul_chunk": 8}, True), ({"chunk_size": 7}, False),
                 ({"chunk_size": 16, "attn_chunk_size": 4}, True), ({"lma": True, "lma_chunks": [8, 16]}, False)]
        for settings, inplace in cases:
            out = make_trunk(evo, settings, inplace_safe=inplace)(*[a.clone() for a in args])
            for r, o in zip(ref, out):
                assert torch.allclose(r, o, atol=2e-5), (settings, inplace, (r - o).abs().max())


@pytest.mark.openfold
@pytest.mark.parametrize("precision, tol", [("fp16", 5e-3), ("bf16", 5e-2)])
def test_low_precision_trunk_islands(tiny, precision, tol):
    import torch

    from openfold.model.primitives import LayerNorm

    from xopt.models.openfold.trunk import make_trunk

    trunk = make_trunk(tiny.extra["model"].evoformer, {"precision": precision})
    lns = [m for m in trunk.modules() if isinstance(m, LayerNorm)]
    assert lns and all(m.weight.dtype == torch.float32 for m in lns)
    linear = trunk.evoformer.blocks[0].msa_att_row.mha.linear_q
    assert linear.weight.dtype == getattr(torch, {"fp16": "float16", "bf16": "bfloat16"}[precision])
    feed = of.validation_inputs(tiny)[1]  # padded rows and residues: FP16 needs inf <= 1e4 there
    assert feed["pair_mask"].min() == 0
    args = [torch.from_numpy(feed[k]) for k in ("m", "z", "msa_mask", "pair_mask")]
    with torch.no_grad():
        ref = tiny.module(*args)
        out = trunk(*args)
    for r, o in zip(ref, out):
        assert o.dtype == torch.float32 and torch.isfinite(o).all()
        assert (r - o).abs().mean() < tol


@pytest.mark.openfold
def test_nonfinite_names_first_module(tiny):
    import copy

    import torch

    from xopt.errors import NonFiniteError
    from xopt.models.openfold.trunk import check_finite, first_nonfinite, make_trunk

    evo = copy.deepcopy(tiny.extra["model"].evoformer)
    with torch.no_grad():
        evo.blocks[1].core.tri_mul_out.linear_z.weight.fill_(float("nan"))
    trunk = make_trunk(evo, {})
    feed = of.example_inputs(tiny)
    args = [torch.from_numpy(feed[k]) for k in ("m", "z", "msa_mask", "pair_mask")]
    assert first_nonfinite(trunk, args) == "evoformer.blocks.1.core.tri_mul_out.linear_z"
    with pytest.raises(NonFiniteError, match="tri_mul_out.linear_z"):
        check_finite(trunk, args, "test trunk")
    assert first_nonfinite(tiny.module, args) is None


@pytest.mark.openfold
def test_drift_in_structure_terms_and_noise_floor(tiny):
    from xopt.runtime.backends.torch_eager import torch_outputs

    feed = of.validation_inputs(tiny)[0]
    ref = torch_outputs(tiny.module, feed, of.NAMES_OUT)
    same = of.SPEC.drift(ref, ref, feed)
    assert same["ca_rmsd"] == pytest.approx(0, abs=1e-6) and same["lddt_ca"] == pytest.approx(1.0)
    assert same["gdt_ts"] == pytest.approx(100.0) and same["pair_rel_err"] == 0
    noisy_feed = of.SPEC.perturb(feed, np.random.default_rng(0))
    assert not np.array_equal(noisy_feed["z"], feed["z"])
    floor = of.SPEC.drift(ref, torch_outputs(tiny.module, noisy_feed, of.NAMES_OUT), noisy_feed)
    assert 0 < floor["pair_rel_err"] < 0.05 and floor["ca_rmsd"] < 1.0


@pytest.mark.openfold
@pytest.mark.slow
def test_fit_on_tiny_config_measures_and_extrapolates(tmp_path, monkeypatch):
    from xopt.models.openfold.budget import SETTINGS, fit_variants

    monkeypatch.setenv("XOPT_CACHE_DIR", str(tmp_path))  # measure here, reuse nothing cached
    picked = [SETTINGS[0], SETTINGS[2]]
    res = fit_variants(of.SPEC.config("tiny"), budget_mb=512.0, settings=picked, small=(16, 32, 48), large=[96],
                       residues=[200])
    un, ch = res["fits"]["unchunked"], res["fits"]["c64-a4"]
    assert res["basis"].startswith("host peak of the ONNX path")
    assert ch["max_residues_extrapolated"] > un["max_residues_extrapolated"] > 96
    big = ch["measured"][-1]
    assert big["n"] == 96 and set(big["phases"]) == {"evo", "structure", "extra"} and big["fits"]
    assert any(p["measured"] for p in res["curve"]) and any(not p["measured"] for p in res["curve"])
    again = fit_variants(of.SPEC.config("tiny"), budget_mb=512.0, settings=[SETTINGS[2]], small=(16, 32, 48),
                         large=[96])
    assert again["fits"]["c64-a4"]["measured"] == ch["measured"]  # every point from the cache


@pytest.mark.openfold
def test_openfold_checkpoints_load_and_mismatches_are_user_errors(tiny, tmp_path):
    import torch

    from xopt.models.openfold.network import build_alphafold

    state = tiny.extra["model"].state_dict()
    plain, wrapped = tmp_path / "plain.pt", tmp_path / "lightning.pt"
    torch.save(state, plain)
    torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()}}, wrapped)
    for path in (plain, wrapped):
        model, _, info = build_alphafold(tiny.config, seed=5, checkpoint=path)
        assert info["kind"] == "checkpoint" and len(info["sha256"]) == 64
        w = model.evoformer.blocks[0].msa_att_row.mha.linear_q.weight
        assert torch.equal(w, tiny.extra["model"].evoformer.blocks[0].msa_att_row.mha.linear_q.weight)
    with pytest.raises(UserError, match="does not match the network"):
        build_alphafold({**tiny.config, "evoformer_blocks": 3}, checkpoint=plain)
    npz = tmp_path / "params_model_3_ptm.npz"
    np.savez(npz, nothing=np.zeros(1))
    with pytest.raises(UserError, match="does not match"):
        build_alphafold(tiny.config, checkpoint=npz)
    other = npz.with_name("params_model_1.npz")
    other.write_bytes(npz.read_bytes())
    with pytest.raises(UserError, match="holds model_1 parameters"):
        build_alphafold(tiny.config, checkpoint=other)
    with pytest.raises(UserError, match="does not exist"):
        build_alphafold(tiny.config, checkpoint=tmp_path / "missing.pt")


def test_chunk_auto_reuses_a_fit_report(tmp_path, monkeypatch):
    import json

    from xopt.profiles import get_profile

    profile = get_profile("rtx3060-laptop-12gb")
    want = max(profile.model_targets("openfold")["residues"])
    fits = {"unchunked": _fit(None, "fp32", [(256, 3000)], 600),
            "c64-fp16": _fit(64, "fp16", [(1024, 2500), (want, 7000)], 3100)}
    report = {"profile": {"name": profile.name}, "config": {"preset": "tiny"}, "settings": {"msa_rows": 8},
              "extra": {"fits": fits}}
    (tmp_path / "report.json").write_text(json.dumps(report))
    monkeypatch.chdir(tmp_path)
    out = of.SPEC.fit.chunk("auto", profile, "tiny", {"fit_report": str(tmp_path / "report.json")})
    assert (out["chunk_size"], out["attn_chunk_size"], out["storage"]) == (64, 4, "fp16")
    assert out["chunk_choice"]["basis"] == f"measured at N={want}: 7000 MB"


@pytest.mark.openfold
def test_sampled_long_point_measures_the_full_runs_peak(tmp_path, monkeypatch):
    """A long point runs only the graph calls that can raise the peak; its peak must be the full
    run's (tiny widths, N=320, each in a fresh process; margin 0.25 MB)."""
    from xopt.fitting import measure_in_fresh_process

    monkeypatch.setenv("XOPT_CACHE_DIR", str(tmp_path))
    info = measure_in_fresh_process("xopt.models.openfold.hostmeasure:export", {
        "config": of.SPEC.config("tiny"), "settings": {"precision": "fp32"}}, timeout=900, what="export", fix="-")
    req = {"graph_dir": info["dir"], "phase": "evo", "n": 320, "s": 32, "threads": 1,
           "settings": {"chunk_size": 16, "attn_chunk_size": 4, "storage": "fp16", "precision": "fp32"}}
    full = measure_in_fresh_process("xopt.models.openfold.hostmeasure:point", req, timeout=900, what="full", fix="-")
    part = measure_in_fresh_process("xopt.models.openfold.hostmeasure:point", {**req, "sample_margin_mb": 0.25},
                                    timeout=900, what="sampled", fix="-")
    assert full["compute"] == "full" and part["compute"].startswith("sampled") and part["time"] == "projected"
    real, calls = (int(x) for x in part["compute"].split()[1:4:2])
    assert real < calls / 4
    assert abs(part["peak_mb"] - full["peak_mb"]) <= max(1.0, 0.05 * full["peak_mb"]), (part, full)
    assert full["peak_mb"] > 8  # big enough for the comparison to mean something
