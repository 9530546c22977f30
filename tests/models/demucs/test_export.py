"""Demucs torch side: configs, representative seeded weights, the exported core and its
variants, the pipeline on the export, the INT8 accuracy gate, fit-to-budget (checkpoints:
test_checkpoints.py)."""
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

from xopt.errors import UserError
from xopt.runtime.backends.torch_eager import torch_outputs
from xopt.models.demucs import pipeline as host

torch = pytest.importorskip("torch")
pytest.importorskip("demucs")

from ._fixtures import spec, tiny  # noqa: E402,F401  (fixtures)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One tiny export with the cheap variants, shared by the tests below (~30 s)."""
    from xopt.export.pipeline import export_model

    out = tmp_path_factory.mktemp("demucs-tiny")
    return export_model("demucs", ["fp32", "fp16", "int8"], out_dir=out, config="tiny")


def _sources(module, feed):
    return host.sources_of(torch_outputs(module, feed, ["spec_out", "wave_out"]))


def test_spec_module_imports_without_torch():
    code = "import sys, xopt.models.demucs, xopt.models.demucs.pipeline; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_htdemucs_config_rebuilds_the_pretrained_size(spec):
    built = spec.build(config="htdemucs")
    assert built.config["parameters"] == 41_984_456  # 41.98 M, as the released htdemucs
    assert built.config["segment_samples"] == 343_980 and built.extra["model"].segment == Fraction(39, 5)
    assert built.weights.kind == "seeded-random" and "LayerScale" in built.weights.note


@pytest.mark.parametrize("config", ["tiny", "tiny-hdemucs", "tiny-demucs"])
def test_host_dsp_plus_core_equals_the_demucs_forward(spec, config):
    built = spec.build(config=config, seed=1)
    model = built.extra["model"]
    c = built.config
    feed = host.segment_feed(c["segment_samples"], 2, 3, c["nfft"], c["spectral"])
    with torch.no_grad():
        full = model(torch.from_numpy(feed["mix"])).numpy()
    ours = _sources(built.module, feed)
    assert np.abs(ours - full).max() < 1e-5 * max(1.0, np.abs(full).max())


def test_seeded_weights_make_transformer_and_dconv_matter(spec):
    """Default init (LayerScale 1e-3/1e-4) silences both branches; the seeded draw does not."""
    from demucs.transformer import LayerScale

    built = spec.build(config={"preset": "htdemucs", **spec.configs["htdemucs"], "segment": 0.25}, seed=0)
    model = built.extra["model"]
    feed = host.segment_feed(built.config["segment_samples"], 1, 0)
    scales = {n: m.scale for n, m in model.named_modules() if isinstance(m, LayerScale)}
    assert sum(n.startswith("crosstransformer") for n in scales) == 20  # 5 layers x 2 branches x 2
    drawn = {n: s.detach().clone() for n, s in scales.items()}

    def change_when_zeroed(prefix):
        base = _sources(built.module, feed)
        with torch.no_grad():
            for n, s in scales.items():
                if n.startswith(prefix):
                    s.zero_()
        out = _sources(built.module, feed)
        return np.linalg.norm(out - base) / np.linalg.norm(base)

    assert change_when_zeroed("crosstransformer") > 0.05
    with torch.no_grad():
        for n, s in scales.items():
            s.copy_(drawn[n])
    assert change_when_zeroed("encoder") > 0.05  # the frequency encoder's DConv branches
    with torch.no_grad():  # demucs' own init
        for n, s in scales.items():
            s.fill_(1e-4 if n.startswith("crosstransformer") else 1e-3)
    assert change_when_zeroed("crosstransformer") < 0.01


def test_segment_longer_than_trained_is_refused(spec):
    with pytest.raises(UserError, match="trained on"):
        spec.build(config={"preset": "tiny", **spec.configs["tiny"], "segment": 2.0})


def test_tiny_export_variants_parity_and_sdr(spec, exported, tiny):
    m = exported
    assert [v["name"] for v in m.variants] == ["fp32", "fp16", "int8"]
    assert not [p for p in m.directory.iterdir() if p.suffix not in (".onnx", ".json") and not p.name.startswith(".")]
    fp32 = m.variant("fp32")
    assert fp32["opset"] == 18 and fp32["inputs"][0]["shape"][0] == "batch"  # dynamic batch
    assert fp32["parity"]["max_abs"] < 1e-4
    assert m.variant("fp16")["ort_options"] == {"graph_optimization_level": "extended"}
    from xopt.runtime import load

    feed = host.segment_feed(tiny.config["segment_samples"], 3, 11)  # a batch size the trace did not see
    ref = torch_outputs(tiny.module, feed, spec.output_names)
    floors = {"fp32": 60.0, "fp16": 45.0, "int8": 45.0}
    for name, floor in floors.items():
        with load(m, variant=name) as sess:
            d = spec.drift(ref, sess.run(feed), feed)
        assert d["finite"] and d["sdr_min_db"] > floor, (name, d)


def test_pipeline_on_the_exported_graph_writes_stems(exported, tiny, tmp_path):
    """What `xopt run` and an embedding app do: runtime.load_pipeline on the export, a file in,
    one WAV per stem out, equal to the PyTorch model run through the same overlap-add."""
    import soundfile as sf

    from xopt.runtime import load_pipeline
    from xopt.models.demucs.synth import generate

    mix, _ = generate(2.0, seed=8)
    sf.write(tmp_path / "song.wav", mix.T, 44100, subtype="FLOAT")
    pipe = load_pipeline(exported.directory, variant="fp32")
    try:
        assert pipe.cfg["segment_samples"] == 22050 and pipe.sources == ["drums", "bass", "other", "vocals"]
        written = pipe.process_file(tmp_path / "song.wav", tmp_path / "out")
        stems = np.stack([sf.read(p, always_2d=True)[0].T for p in written])
    finally:
        pipe.close()

    class TorchCore:
        def run(self, feeds):
            return torch_outputs(tiny.module, feeds, ["spec_out", "wave_out"])

    ref = host.separate(TorchCore(), mix, tiny.config)
    from xopt.models.demucs.sdr import per_source

    assert per_source(ref[None], stems[None]).min() > 60


def test_long_reductions_are_traced_in_two_stages(exported):
    """ORT's CPU reductions accumulate in float32: one ReduceMean/InstanceNorm over the 1e6-1e7
    elements of the input statistics and GroupNorm(1, C) drifted htdemucs to 60 dB SDR."""
    import onnx

    from xopt.models.demucs.patch import LONG_REDUCTION, precise_reductions

    model = onnx.load(str(exported.path_of("fp32")), load_external_data=False)
    assert not [n for n in model.graph.node if n.op_type == "InstanceNormalization"]
    x = torch.randn(2, 96, 30011, dtype=torch.float64) * 3 + 1
    gn = torch.nn.GroupNorm(1, 96).double()
    with torch.no_grad(), precise_reductions(None):
        std, mean, normed = x.std(dim=(1, 2)), x.mean(dim=(1, 2), keepdim=True), gn(x)
    with torch.no_grad():
        assert torch.allclose(std, x.std(dim=(1, 2)), rtol=1e-12) and torch.allclose(mean, x.mean((1, 2), True))
        assert torch.allclose(normed, gn(x), atol=1e-10)
    assert LONG_REDUCTION < 30011 * 96


def test_fp16_input_statistics_stay_finite_and_exact(exported):
    """Per-segment statistics over 1e4-1e6 elements: in pure FP16 a reduction's element count,
    or the sum of squares of a loud segment, overflows. The FP16 variant keeps the prologue in
    FP32 (the pass's fp32_prologue) and every constant stays in FP16 range; checked with ONNX's
    reference evaluator, which computes FP16 in FP16 (ORT CPU quietly runs most FP16 ops in FP32)."""
    import onnx
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator
    from onnxconverter_common import float16

    from xopt.optimize.fp16 import prologue_nodes

    model = onnx.load(str(exported.path_of("fp32")))
    block = prologue_nodes(model)
    produced = {o for n in model.graph.node if n.name in block for o in n.output}
    normalised_inputs = [n.input[0] for n in model.graph.node if n.op_type == "Conv" and n.input[0] in produced]
    assert len(normalised_inputs) == 2  # spectral and time branch
    used = {i for n in model.graph.node if n.name in block for i in n.input}
    consts = [numpy_helper.to_array(t) for t in model.graph.initializer if t.name in used]
    assert max(float(np.abs(c).max()) for c in consts if c.dtype.kind == "f" and c.size) < 65504
    length = model.graph.input[0].type.tensor_type.shape.dim[2].dim_value
    feed = host.core_feed(host.segment_feed(length, 1, 5)["mix"] * 3.0)  # a loud segment: variance ~9
    conv = float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=block)
    sub = onnx.utils.Extractor(conv).extract_model(["mix", "spec"], normalised_inputs)
    for out in ReferenceEvaluator(sub).run(None, feed):
        out = out.astype(np.float64)
        assert np.isfinite(out).all() and abs(out.std() - 1.0) < 0.01


def _gated(spec, tmp_path, src, name, **opts):
    from xopt.optimize.base import PassContext, get_pass

    built = spec.build(config="tiny", seed=0)
    p = get_pass("int8-gated")
    ctx = PassContext(model="demucs", calibration=lambda n: spec.calibration_inputs(built, n), workdir=tmp_path)
    base = {"calibrate_methods": ["minmax"], "per_channel": "true", "speed_runs": 1, "gate_inputs": "calibration",
            "gate_samples": 1}
    return p.apply(src, tmp_path / f"{name}.onnx", p.options.resolve({**base, **opts}), ctx), built


def test_int8_gate_passes_on_the_profiles_terms_with_streamed_calibration(spec, exported, tmp_path):
    src = exported.path_of("fp32")
    loose, built = _gated(spec, tmp_path, src, "loose", max_drop=3.0, calib_memory_mb=1)
    assert loose["fp32_groups"] == [] and loose["gate"]["passed"] and loose["gate"]["key"] == "sdr_min_db"
    assert loose["calibration_groups"] > 1  # 1 MB of extra outputs per run: calibration streamed in groups
    # one method, per-channel fixed: nothing to choose between, so no trial build
    assert loose["calibration_trials"] == [] and loose["calibration"] == {"method": "minmax", "per_channel": True}
    import onnx

    from xopt.runtime.backends.ort import OrtSession

    qdq = onnx.load(str(tmp_path / "loose.onnx"))
    assert sum(n.op_type == "QuantizeLinear" for n in qdq.graph.node) > 10
    feed = host.segment_feed(built.config["segment_samples"], 1, 77)
    with OrtSession(src) as ref, OrtSession(tmp_path / "loose.onnx") as q:
        d = spec.drift(ref.run(feed), q.run(feed), feed)
    assert 10 < d["sdr_min_db"] < 60  # lossy, but a separation still


def test_int8_dynamic_gate_ranks_transformer_layers(spec, exported, tmp_path):
    """The int8 variant (dynamic INT8 of the transformer) on the raw export, whose module paths
    name the groups. Exported on seeded-random weights its gate is measured, not applied; with a
    limit given (as --max-drop does) the gate decides and every layer is ranked."""
    facts = next(p["facts"] for p in exported.variant("int8")["passes"] if p["name"] == "int8-gated")
    assert facts["mode"] == "dynamic" and facts["gate"]["passed"] is None
    assert facts["gate"]["text"].startswith("not applied") and np.isfinite(facts["gate"]["value"])
    variant_opts = dict(spec.variants["int8"].passes[0][1])
    ranked, _ = _gated(spec, tmp_path, exported.path_of("fp32"), "dyn",
                       **{**variant_opts, "max_drop": 3.0, "localise": "always"})
    assert ranked["gate"]["passed"] and ranked["fp32_groups"] == []
    names = {r["group"] for r in ranked["layer_drift"]}
    assert {"transformer layer 0 (spectral)", "transformer layer 0 (temporal)"} <= names


@pytest.mark.slow
def test_int8_gate_search_keeps_the_worst_groups_fp32(spec, exported, tmp_path):
    from xopt.gate import drop

    src = exported.path_of("fp32")
    loose, _ = _gated(spec, tmp_path, src, "loose", max_drop=3.0)
    all_drop = drop(spec.gate, loose["all_low_precision"]["value"])
    strict, _ = _gated(spec, tmp_path, src, "strict", max_drop=all_drop / 3)
    assert strict["fp32_groups"] and drop(spec.gate, strict["gate"]["value"]) <= all_drop / 3
    assert len(strict["fp32_groups"]) < strict["groups"]


# --- fit to budget ----------------------------------------------------------------------

def test_fit_curve_and_search_stay_in_budget():
    from xopt.models.demucs.budget import fit_curve, predict_mb, search

    true = {"a_mb": 50.0, "b_mb_per_sample": 2e-3, "c_mb_per_sample2": 1e-9}
    points = [{"batch": b, "samples": n, "activation_mb": predict_mb(true, n, b, 0, "fp32", False)}
              for b, n in [(1, 20000), (1, 40000), (1, 60000), (2, 40000)]]
    curve = fit_curve(points)
    for k, v in true.items():
        assert curve[k] == pytest.approx(v, rel=1e-6)
    best = search(curve, 170.0, 4000.0, 44100, [7.8, 4.0, 2.0], "fp32", gpu=True)
    assert predict_mb(curve, best["samples"], best["batch"], 170.0, "fp32", True) <= 4000.0
    assert predict_mb(curve, best["samples"], best["batch"] + 1, 170.0, "fp32", True) > 4000.0
    assert search(curve, 170.0, 100.0, 44100, [7.8], "fp32", gpu=True) is None


def test_fit_report_from_a_real_measurement(spec, exported):
    from xopt.models.demucs.budget import _measure_in_subprocess
    from xopt.profiles import get_profile
    from xopt.report_schema import validate

    cfg = spec.config("tiny")
    point = _measure_in_subprocess(cfg, 1, 0.25, 0)  # a fresh process: a clean peak counter
    assert point["activation_mb"] > 0 and point["samples"] == 11025

    def measure(config, batch, seconds, seed):  # scale the one real point: the search is under test
        return {**point, "batch": batch, "seconds": seconds, "samples": int(seconds * 44100),
                "activation_mb": point["activation_mb"] * batch * seconds / 0.25}

    report = spec.fit.search(spec, get_profile("rtx3060-laptop-12gb"), cfg, {"measure": measure,
                                                                              "artifacts": "/nonexistent"})
    validate(report)
    assert report["kind"] == "fit" and {r["precision"] for r in report["results"]} == {"fp32", "fp16"}
    assert report["extra"]["choice"]["precision"] == "fp16" and report["extra"]["choice"]["segment"] <= 0.5
    for r in report["results"]:
        assert r["estimated_peak_mb"] <= r["budget_mb"]
    assert report["extra"]["curve"]["ort_calibration"] is None and "not calibrated" in report["settings"]["basis"]

    def measure_ort(artifact):  # the export exists: the curve is scaled to ONNX Runtime's working set
        from xopt.models.demucs.budget import measure_ort as real

        return real(artifact)

    scaled = spec.fit.search(spec, get_profile("cpu"), cfg, {"measure": measure, "artifacts": str(exported.directory),
                                                      "measure_ort": measure_ort})
    cal = scaled["extra"]["curve"]["ort_calibration"]
    assert cal["samples"] == 22050 and cal["activation_mb"] >= 0 and cal["ratio"] >= 1.0


@pytest.mark.slow
def test_full_htdemucs_export_parity(spec, tmp_path):
    import onnxruntime as ort

    from xopt.export.pipeline import export_model

    m = export_model("demucs", ["fp32"], out_dir=tmp_path, config="htdemucs")
    v = m.variant("fp32")
    assert v["size_bytes"] < 2 * 2**30 and sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) \
        == ["demucs_fp32.onnx", "manifest.json"]  # one file, no external data
    built = spec.build(config="htdemucs")
    feed = host.segment_feed(343980, 1, 21)
    ref = torch_outputs(built.module, feed, spec.output_names)
    so = ort.SessionOptions()
    so.enable_cpu_mem_arena = False  # keep this test's process small
    sess = ort.InferenceSession(str(m.path_of("fp32")), so, providers=["CPUExecutionProvider"])
    out = dict(zip(spec.output_names, sess.run(list(spec.output_names), feed)))
    d = spec.drift(ref, out, feed)
    assert d["sdr_min_db"] > 90, d  # measured 99 dB (60 dB without two-stage reductions)


@pytest.mark.slow
def test_xopt_run_separates_a_30s_track(exported, tmp_path):
    import soundfile as sf

    from xopt.models.demucs.synth import generate

    mix, _ = generate(30.0, seed=9)
    sf.write(tmp_path / "track.flac", mix.T, 44100)
    out = subprocess.run([sys.executable, "-m", "xopt.cli", "run", "demucs", str(tmp_path / "track.flac"),
                          "-o", str(tmp_path / "sep"), "--artifacts", str(exported.directory)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    for stem in ("drums", "bass", "other", "vocals"):
        data, rate = sf.read(tmp_path / "sep" / "track" / f"{stem}.wav")
        assert rate == 44100 and data.shape == (mix.shape[1], 2) and np.isfinite(data).all()


@pytest.mark.slow
@pytest.mark.parametrize("config", ["tiny-hdemucs", "tiny-demucs"])
def test_other_architectures_export(config, tmp_path):
    from xopt.export.pipeline import export_model

    m = export_model("demucs", ["fp32"], out_dir=tmp_path, config=config)
    assert m.variant("fp32")["parity"]["passed"]
