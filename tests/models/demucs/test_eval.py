"""Demucs against ground truth: museval's SDR with a known answer, the MUSDB18-HQ layout and its
errors, the label-free checks, `xopt eval demucs` with the model and on saved predictions, and
the warnings `xopt run demucs` prints."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

sf = pytest.importorskip("soundfile")

from xopt.errors import UserError  # noqa: E402
from xopt.models.demucs import checks as lf  # noqa: E402
from xopt.models.demucs.eval_data import STEMS, read_dataset  # noqa: E402
from xopt.models.demucs.evaluate import bss_eval, score  # noqa: E402
from xopt.models.demucs.sdr import per_source  # noqa: E402

RATE = 44100


def _stems(seconds=2.0, seed=0, rate=RATE) -> np.ndarray:
    """[4, 2, L] stationary stems (steady tones): each 1 s window has the same power, so a
    global SNR is every frame's SNR and BSS Eval's frame median must land on it."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    out = []
    for k in range(4):
        f = rng.uniform(80, 2000, 3)
        mono = sum(np.sin(2 * np.pi * fi * t + rng.uniform(0, 6)) for fi in f) / 15
        out.append(np.stack([mono, np.roll(mono, 7 + k)]))
    return np.asarray(out, np.float32)


def _noisy(refs, snr_db, seed=1):
    rng = np.random.default_rng(seed)
    out = []
    for r in refs:
        noise = rng.standard_normal(r.shape)
        noise *= np.sqrt(np.sum(r.astype(np.float64) ** 2) / np.sum(noise ** 2) / 10 ** (snr_db / 10))
        out.append(r + noise)
    return np.asarray(out, np.float32)


def _track(folder, refs, rate=RATE, skip=()):
    folder.mkdir(parents=True, exist_ok=True)
    sf.write(folder / "mixture.wav", refs.sum(0).T, rate, subtype="FLOAT")
    for s, r in zip(STEMS, refs):
        if s not in skip:
            sf.write(folder / f"{s}.wav", r.T, rate, subtype="FLOAT")


def test_museval_sdr_of_a_stem_plus_noise_at_20_db_is_20_db():
    refs = _stems()
    bss = bss_eval(refs, _noisy(refs, 20.0), RATE)
    assert np.all(np.abs(bss["sdr"] - 20.0) < 0.5), bss["sdr"]
    assert np.all(np.abs(per_source(refs, _noisy(refs, 20.0)) - 20.0) < 0.05)
    worse = bss_eval(refs[:2], _noisy(refs[:2], 5.0), RATE)["sdr"]
    assert np.all(np.abs(worse - 5.0) < 0.5), worse


def test_musdb_layout_subsets_and_missing_stems(tmp_path):
    refs = _stems(1.5)
    _track(tmp_path / "test" / "song a", refs)
    _track(tmp_path / "train" / "song b", refs)
    ds = read_dataset(tmp_path, {})
    assert [i.name for i in ds.items] == ["song a"] and "test subset" in ds.layout
    assert [i.name for i in read_dataset(tmp_path, {"subset": "train"}).items] == ["song b"]
    _track(tmp_path / "test" / "song c", refs, skip=("vocals",))
    with pytest.raises(UserError, match="song c lacks vocals.wav"):
        read_dataset(tmp_path, {})
    assert len(read_dataset(tmp_path, {"skip_missing": True}).items) == 1
    with pytest.raises(UserError, match="--subset 'dev'"):
        read_dataset(tmp_path, {"subset": "dev"})


def test_unreadable_stem_is_named(tmp_path):
    _track(tmp_path / "t", _stems(1.0))
    (tmp_path / "t" / "bass.wav").write_bytes(b"RIFF nonsense")
    with pytest.raises(UserError, match="bass.wav"):
        read_dataset(tmp_path, {})


def test_rate_and_length_mismatches_are_resampled_trimmed_and_reported(tmp_path):
    refs = _stems(2.0)
    _track(tmp_path / "t", refs)
    item = read_dataset(tmp_path, {"sdr": "plain"}).items[0]  # BSS Eval has its own test
    # the estimate: the references at 22.05 kHz and a little short, as another pipeline might write them
    from xopt.models.demucs.audio import resample

    est = {s: resample(r, RATE, 22050)[:, :-300] for s, r in zip(STEMS, refs)}
    out = score(item, {"stems": est, "samplerate": 22050})
    assert any("resampled to the reference's 44100 Hz" in n for n in out["notes"])
    assert any("trimmed" in n for n in out["notes"])
    assert out["sdr_plain"] > 15  # band-limited by the round trip through 22 kHz, still the same signal
    assert "sdr" not in out  # --sdr plain: no BSS Eval numbers


def test_checks_pass_a_consistent_separation_and_name_a_missing_denormalisation():
    refs = _stems(2.0)
    mix = refs.sum(0)
    stems = dict(zip(STEMS, refs))
    info = {"source": {"samplerate": RATE, "channels": 2}}
    assert all(c["ok"] for c in lf.checks(mix, stems, info)), lf.checks(mix, stems, info)
    std = float(mix.std())
    scaled = {s: (v - mix.mean()) / std for s, v in stems.items()}  # stems left in the model's scale
    failed = {c["name"]: c for c in lf.checks(mix, scaled, info) if not c["ok"]}
    assert "mixture consistency" in failed and "not normalised" in failed["mixture consistency"]["message"]
    assert "de-normalised" in failed["stems' loudness vs input"]["message"]
    wrong_rate = {c["name"]: c for c in lf.checks(mix, stems, {"source": {"samplerate": 22050, "channels": 1}})}
    assert not wrong_rate["input sample rate"]["ok"] and "22050 Hz" in wrong_rate["input sample rate"]["message"]
    assert not wrong_rate["input channels"]["ok"] and "mono" in wrong_rate["input channels"]["message"]
    clipped = {c["name"]: c for c in lf.checks(np.clip(mix * 20, -1, 1), stems, info)}
    assert not clipped["input clipping"]["ok"]


def _xopt(*args, cwd):
    return subprocess.run([sys.executable, "-m", "xopt.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "COLUMNS": "250"}, timeout=600)


def test_eval_predictions_mode_reports_the_snr_as_sdr(tmp_path):
    refs = _stems(2.0)
    _track(tmp_path / "ds" / "t1", refs)
    pred = tmp_path / "pred" / "t1"
    pred.mkdir(parents=True)
    for s, e in zip(STEMS, _noisy(refs, 20.0)):
        sf.write(pred / f"{s}.wav", e.T, RATE, subtype="FLOAT")
    r = _xopt("eval", "demucs", str(tmp_path / "ds"), "--predictions", str(tmp_path / "pred"), "--out",
              str(tmp_path / "rep"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    agg = rep["results"][0]["aggregate"]
    assert abs(agg["sdr"] - 20.0) < 0.5 and abs(agg["sdr_plain"] - 20.0) < 0.05
    assert all(abs(agg[f"sdr_{s}"] - 20.0) < 0.5 for s in STEMS)
    assert "museval" in rep["dataset"]["method"] and "BSS Eval v4" in rep["dataset"]["method"]
    (pred / "bass.wav").unlink()
    r = _xopt("eval", "demucs", str(tmp_path / "ds"), "--predictions", str(tmp_path / "pred"), "--out",
              str(tmp_path / "rep2"), cwd=tmp_path)
    assert r.returncode == 1 and "t1" in r.stderr and "bass.wav" in r.stderr


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    pytest.importorskip("demucs")
    from xopt.export.pipeline import export_model

    out = tmp_path_factory.mktemp("demucs-art")
    export_model("demucs", ["fp32"], out_dir=out, config="tiny")
    return out


def test_run_checks_read_the_files_xopt_run_wrote(tmp_path):
    """`xopt run demucs` checks what it read and wrote: a 22.05 kHz mono input is named, and stems
    that add back up to the mix pass the consistency check."""
    refs = _stems(1.5)
    sf.write(tmp_path / "in.wav", refs.sum(0)[0, ::2], 22050)
    written = []
    for s, r in zip(STEMS, refs):
        sf.write(tmp_path / f"{s}.wav", r.T, RATE, subtype="FLOAT")
        written.append(tmp_path / f"{s}.wav")
    found = {c["name"]: c for c in lf.run_checks(tmp_path / "in.wav", written, {"weights": {"kind": "checkpoint"}})}
    assert not found["input sample rate"]["ok"] and "22050 Hz" in found["input sample rate"]["message"]
    assert not found["input channels"]["ok"]
    sf.write(tmp_path / "mix.wav", refs.sum(0).T, RATE, subtype="FLOAT")
    found = {c["name"]: c for c in lf.run_checks(tmp_path / "mix.wav", written, {"weights": {"kind": "checkpoint"}})}
    assert all(c["ok"] for c in found.values()), found
    assert found["mixture consistency"]["value"] > 60  # the stems are the mix's own parts


# one tiny export costs a minute of CPU (the dynamo exporter): the model run is a slow test; the
# checks and scoring it drives are covered above without it
@pytest.mark.slow
def test_eval_and_run_with_the_model(exported, tmp_path):
    from xopt.models.demucs.synth import generate

    mix, stems = generate(1.5, seed=4)
    _track(tmp_path / "ds" / "song", np.stack([stems[s] for s in STEMS]))
    r = _xopt("eval", "demucs", str(tmp_path / "ds"), "--artifacts", str(exported), "--out", str(tmp_path / "rep"),
              cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    res = rep["results"][0]
    assert rep["weights"]["kind"] == "seeded-random" and res["variant"] == "fp32"
    assert np.isfinite(res["aggregate"]["sdr_plain"]) and "sdr_vocals" in res["aggregate"]
    assert res["speed"]["real_time_factor"] > 0
    names = {c["name"] for c in res["items"][0]["checks"]}
    assert {"mixture consistency", "input sample rate", "input loudness"} <= names
    # xopt run: the same checks on the files it wrote, as one-line warnings (random weights do not
    # sum to the mix), with the sample rate of a 22.05 kHz mono input named
    sf.write(tmp_path / "in.wav", mix[0, ::2], 22050)
    r = _xopt("run", "demucs", str(tmp_path / "in.wav"), "-o", str(tmp_path / "stems"), "--artifacts", str(exported),
              cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.startswith("xopt: warning:")]
    assert any("input sample rate" in w and "22050 Hz" in w for w in warnings), r.stderr
    assert any("input channels" in w for w in warnings)
