"""Demucs host side (numpy): STFT numerics against demucs' torch code, overlap-add against
demucs.apply, the separation pipeline on audio edge cases, SDR, drift/noise floor, test music."""
import importlib.util
import sys

import numpy as np
import pytest

from xopt.errors import OutputExistsError, UserError
from xopt.models.demucs import dsp
from xopt.models.demucs import ola
from xopt.models.demucs import sdr as sdr
from xopt.models.demucs import pipeline as host
from xopt.models.demucs.synth import SOURCES, generate

sf = pytest.importorskip("soundfile")


# --- a real model behind the Session interface (the torch core, no ONNX needed here) ---------

class TorchCoreSession:
    def __init__(self, module):
        self.module = module
        self.calls = 0

    def run(self, feeds):
        import torch

        self.calls += 1
        with torch.no_grad():
            so, wo = self.module(torch.from_numpy(feeds["mix"]), torch.from_numpy(feeds["spec"]))
        return {"spec_out": so.numpy(), "wave_out": wo.numpy()}

    def close(self):
        pass


@pytest.fixture(scope="module")
def tiny():
    pytest.importorskip("demucs")
    from xopt.registry import get_model

    return get_model("demucs").build(config="tiny", seed=0)


@pytest.fixture(scope="module")
def pipe(tiny):
    return host.SeparationPipeline(TorchCoreSession(tiny.module), tiny.config)


# --- numerics against demucs' torch code -----------------------------------------------------

@pytest.mark.parametrize("length", [343980, 44100, 4410, 1000, 1])
def test_stft_istft_match_demucs_torch(length):
    torch = pytest.importorskip("torch")
    from demucs.htdemucs import HTDemucs

    model = HTDemucs(["a", "b"], channels=4, depth=1, t_layers=0, segment=1)
    x = np.random.default_rng(length).standard_normal((2, 2, length)).astype(np.float32)
    z_ref = model._spec(torch.from_numpy(x))
    z = dsp.stft(x)
    scale = np.abs(z_ref.numpy()).max()
    assert np.abs(z - z_ref.numpy()).max() <= 1e-6 * scale
    assert np.abs(dsp.to_cac(z) - model._magnitude(z_ref).numpy()).max() <= 1e-6 * scale

    m = np.random.default_rng(1).standard_normal((2, 2, 4) + z.shape[-2:]).astype(np.float32)
    wave_ref = model._ispec(model._mask(None, torch.from_numpy(m)), length).numpy()
    wave = dsp.istft(dsp.from_cac(m), length)
    assert wave.shape == wave_ref.shape
    assert np.abs(wave - wave_ref).max() <= 1e-6 * np.abs(wave_ref).max()
    fast = dsp.istft_cac(m, length)  # the pipeline's float32 path, straight from the CaC layout
    assert fast.dtype == np.float32 and fast.shape == wave_ref.shape
    assert np.abs(fast - wave_ref).max() <= 1e-6 * np.abs(wave_ref).max()
    wave_out = np.random.default_rng(2).standard_normal(wave_ref.shape).astype(np.float32)
    summed = dsp.reassemble(m, wave_out)
    assert np.abs(summed - (wave_out + wave_ref)).max() <= 1e-6 * np.abs(wave_out + wave_ref).max()


def test_overlap_add_equals_demucs_apply_model(tiny):
    torch = pytest.importorskip("torch")
    import demucs.apply as apply

    model = tiny.extra["model"]
    session = TorchCoreSession(tiny.module)
    mix, _ = generate(0.8, seed=3)
    mean, std = dsp.track_stats(mix)
    wav = torch.from_numpy(mix)
    norm = ((wav - wav.mean(0).mean()) / (wav.mean(0).std() + 1e-8))[None]
    with torch.no_grad():
        ref = apply.apply_model(model, norm, shifts=0, split=True, overlap=0.25)[0].numpy() * std + mean
    ours = host.separate(session, mix, {**tiny.config, "batch": 3})
    assert np.abs(ours - ref).max() < 1e-5

    offsets = iter([5000, 21000])
    original = apply.random.randint
    apply.random.randint = lambda a, b: next(offsets)
    try:
        with torch.no_grad():
            ref = apply.apply_model(model, norm, shifts=2, split=True, overlap=0.25)[0].numpy()
    finally:
        apply.random.randint = original
    run = lambda segs: host.separate_segments(session, segs)  # noqa: E731
    ours = ola.apply_track(run, ((mix - mean) / std), tiny.config["segment_samples"], shifts=2,
                           shift_offsets=[5000, 21000])
    assert np.abs(ours - ref).max() < 1e-5


@pytest.mark.parametrize("batch,shifts", [(1, 0), (2, 0), (3, 2)])
def test_overlapped_finishing_equals_sequential(batch, shifts):
    """The helper-thread finishing (iSTFT + overlap-add of one batch during the next run) sums
    the same numbers in the same order as the plain loop: identical output."""
    rng = np.random.default_rng(batch)
    mix = rng.standard_normal((2, 5000)).astype(np.float32)
    proj = rng.standard_normal((3, 2)).astype(np.float32)
    seen = []

    def raw(segs):  # stands in for the session: returns something finish() turns into sources
        seen.append(segs.shape[0])
        return {"x": segs.copy()}

    def finish(out):
        x = out["x"]
        return np.tanh(np.einsum("sc,bcl->bscl", proj, x)) + x[:, None] * 0.5

    common = dict(segment=1200, overlap=0.25, batch=batch, shifts=shifts, shift_offsets=[100, 7000][:shifts] or None)
    plain = ola.apply_track(lambda s: finish(raw(s)), mix, samplerate=20000, **common)
    calls = len(seen)
    ovl = ola.apply_track(raw, mix, samplerate=20000, finish=finish, **common)
    assert len(seen) == 2 * calls and max(seen) <= batch
    assert ovl.shape == plain.shape == (3, 2, 5000)
    assert np.array_equal(ovl, plain)
    staged = ola.apply_track(lambda feed: {"x": feed["y"] - 1.0}, mix, samplerate=20000, finish=finish,
                             prepare=lambda segs: {"y": segs + 1.0}, **common)
    assert np.allclose(staged, plain, rtol=0, atol=1e-6)


def test_batched_segments_equal_unbatched(tiny):
    """Several segments in one session call give the stems of one segment per call (1e-4)."""
    session = TorchCoreSession(tiny.module)
    mix, _ = generate(2.0, seed=5)
    one = host.separate(session, mix, {**tiny.config, "batch": 1})
    calls = session.calls
    three = host.separate(session, mix, {**tiny.config, "batch": 3})
    assert session.calls - calls < calls
    threaded = host.separate(session, mix, {**tiny.config, "batch": 3, "overlap_host": True})
    assert np.abs(three - one).max() < 1e-4 * max(1.0, np.abs(one).max())
    assert np.array_equal(three, threaded)


def test_transition_weight_and_plan():
    w = ola.transition_weight(10)
    assert w.max() == 1.0 and w[0] == w[-1] == 0.2 and len(w) == 10
    chunks = ola.plan(0, 25, 10, 0.25)
    assert [c.out_offset for c in chunks] == [0, 7, 14, 21] and chunks[-1].length == 4
    with pytest.raises(ValueError):
        ola.transition_weight(10, power=0.5)


# --- the pipeline on audio edge cases ---------------------------------------------------------

def _check(stems, length):
    assert list(stems) == list(SOURCES)
    for v in stems.values():
        assert v.shape == (2, length) and v.dtype == np.float32 and np.isfinite(v).all()


def test_separates_arrays_mono_short_silent_and_int(pipe):
    mix, _ = generate(0.8, seed=1)
    _check(pipe(mix), mix.shape[1])
    _check(pipe(mix[0]), mix.shape[1])  # mono 1-D -> stereo
    _check(pipe(mix[:, :4410]), 4410)  # 0.1 s, shorter than a segment
    silent = pipe(np.zeros((2, 3000), np.float32))
    _check(silent, 3000)
    assert max(np.abs(v).max() for v in silent.values()) < 1e-3
    _check(pipe((mix * 32767).astype(np.int16)), mix.shape[1])
    with pytest.raises(UserError, match="NaN"):
        pipe(np.full((2, 100), np.nan, np.float32))
    with pytest.raises(UserError, match="empty"):
        pipe(np.zeros((2, 0), np.float32))
    with pytest.raises(UserError, match="samples, channels"):
        pipe(mix.T.copy())


def test_reads_resamples_and_writes_files(pipe, tmp_path):
    mix, _ = generate(0.6, seed=2)
    sf.write(tmp_path / "song48k.flac", mix.T, 48000)  # a "48 kHz" file: resampled to 44.1 kHz
    sf.write(tmp_path / "mono8bit.wav", (mix[0] * 0.5), 44100, subtype="PCM_U8")
    out = pipe(tmp_path / "song48k.flac")
    _check(out, int(round(mix.shape[1] * 44100 / 48000)))
    written = pipe.process_file(tmp_path / "mono8bit.wav", tmp_path / "out")
    assert [p.name for p in written] == [f"{s}.wav" for s in SOURCES]
    data, rate = sf.read(written[0], always_2d=True)
    assert rate == 44100 and data.shape == (mix.shape[1], 2)
    assert not list((tmp_path / "out" / "mono8bit").glob(".*partial"))
    with pytest.raises(OutputExistsError):
        pipe.process_file(tmp_path / "mono8bit.wav", tmp_path / "out")
    assert pipe.process_file(tmp_path / "mono8bit.wav", tmp_path / "out", force=True) == written

    (tmp_path / "fake.wav").write_bytes(b"RIFF not really")
    with pytest.raises(UserError, match="cannot read"):
        pipe(tmp_path / "fake.wav")
    with pytest.raises(UserError, match="no audio file"):
        pipe(tmp_path / "missing.wav")


def test_progress_wraps_the_segment_loop(pipe):
    seen = []

    def progress(items):
        items = list(items)
        seen.append(len(items))
        return items

    mix, _ = generate(1.2, seed=4)
    pipe(mix, progress=progress)
    assert seen == [len(ola.plan(0, mix.shape[1], pipe.cfg["segment_samples"], 0.25))]


# --- metrics, drift, noise floor ------------------------------------------------------------------

def test_plain_sdr():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((4, 2, 10000))
    assert sdr.sdr(ref, ref) > 100
    assert sdr.sdr(ref, np.zeros_like(ref)) == pytest.approx(0.0, abs=1e-6)
    noisy = ref + 0.1 * rng.standard_normal(ref.shape)  # 20 dB below
    assert sdr.sdr(ref, noisy) == pytest.approx(20.0, abs=0.2)
    per = sdr.per_source(ref[None], noisy[None])
    assert per.shape == (4,) and np.allclose(per, 20.0, atol=0.3)
    assert sdr.sdr(np.zeros(10), np.zeros(10)) == pytest.approx(0.0)


@pytest.mark.skipif(importlib.util.find_spec("museval") is None, reason="museval not installed")
def test_museval_sdr_without_ffmpeg():
    metrics = sdr.museval_metrics()
    assert "musdb" not in sys.modules and "stempeg" not in sys.modules
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((2, 2, 3 * 44100))
    est = ref + 0.1 * rng.standard_normal(ref.shape)
    scores = sdr.bss_sdr(ref, est)
    assert scores.shape == (2,) and np.all(np.abs(scores - 20.0) < 1.5)
    assert hasattr(metrics, "bss_eval")


def test_museval_missing_names_the_extra(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    sdr.museval_metrics.cache_clear()
    try:
        with pytest.raises(UserError, match=r"xopt\[museval\]"):
            sdr.museval_metrics()
    finally:
        sdr.museval_metrics.cache_clear()


def test_drift_and_noise_floor(tiny):
    session = TorchCoreSession(tiny.module)
    feed = host.segment_feed(tiny.config["segment_samples"], 2, 9)
    ref = session.run(feed)
    same = host.drift(ref, ref, feed)
    assert same["finite"] and same["sdr_min_db"] > 100 and set(same["sdr_db"]) == set(SOURCES)
    noisy = host.perturb(feed, np.random.default_rng(0))
    lsb = np.abs(feed["mix"]).max() / 32767
    assert np.allclose(np.abs(noisy["mix"] - feed["mix"]), lsb, rtol=1e-3)
    assert np.allclose(noisy["spec"], dsp.core_spec(noisy["mix"]))
    floor = host.drift(ref, session.run(noisy), noisy)
    assert 20 < floor["sdr_min_db"] < same["sdr_min_db"]
    broken = {**ref, "wave_out": ref["wave_out"] * np.nan}
    assert host.drift(ref, broken, feed)["finite"] is False


def test_profile_inputs_follow_the_config():
    feeds = host.profile_inputs({"config": {"segment_samples": 22050}, "batch": 2}, 2, 0)
    assert len(feeds) == 2 and feeds[0]["mix"].shape == (2, 2, 22050) and feeds[0]["spec"].shape == (2, 4, 2048, 22)
    assert host.profile_inputs({"segment_seconds": 0.1}, 1, 0)[0]["mix"].shape == (1, 2, 4410)


# --- synthetic music ------------------------------------------------------------------------------

def test_synthetic_music_keeps_its_stems():
    mix, stems = generate(2.0, seed=5)
    assert list(stems) == list(SOURCES) and mix.shape == (2, 88200)
    assert np.allclose(sum(stems.values()), mix, atol=1e-6) and np.abs(mix).max() == pytest.approx(0.9, rel=1e-4)
    for name, s in stems.items():
        assert s.std() > 0.01, name
    again, _ = generate(2.0, seed=5)
    assert np.array_equal(mix, again) and not np.array_equal(mix, generate(2.0, seed=6)[0])
    spectrum = {k: np.abs(np.fft.rfft(v[0])) for k, v in stems.items()}
    freqs = np.fft.rfftfreq(88200, 1 / 44100)
    centroid = {k: float((s * freqs).sum() / s.sum()) for k, s in spectrum.items()}
    assert centroid["bass"] < centroid["vocals"] < centroid["drums"]  # bass low, hats/snare high


def test_profile_end_to_end_runs_the_label_free_checks(tmp_path):
    """`xopt profile demucs` with end-to-end timing (the default) on the tiny config: the
    pipeline's output goes through Demucs' label-free checks and the report lists them."""
    pytest.importorskip("demucs")
    import json

    from hardening._support import cli

    from xopt.export.pipeline import export_model

    export_model("demucs", ["fp32"], out_dir=tmp_path / "art", config="tiny")
    r = cli("profile", "demucs", "--variants", "fp32", "--artifacts", tmp_path / "art", "--out", tmp_path / "rep",
            "--frames", "1")
    assert r.rc == 0, r.err
    (res,) = json.loads((tmp_path / "rep" / "report.json").read_text())["results"]
    assert res["latency_e2e_ms"]["p50"] > 0
    checks = {c["name"]: c for c in res["label_free_checks"]}
    assert "mixture consistency" in checks and "input sample rate" not in checks  # no file: no source facts
