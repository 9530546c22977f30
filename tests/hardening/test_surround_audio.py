"""Audio with more than two channels: 5.1 and 7.1 are downmixed to stereo before separation
(ITU-R BS.775: LFE dropped, centre and surrounds at -3 dB, rescaled when the sum would clip),
with a note on stderr and in the batch record; other counts are refused before any export
(test_checked_first.py). The label-free checks after `xopt run` never crash on a channel count
(pyloudnorm measures at most five channels)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from xopt.errors import UserError

from ._support import cli_process, debris

sf = pytest.importorskip("soundfile")
K = np.sqrt(0.5)  # -3 dB


def _impulses(channels: int) -> np.ndarray:
    """[C, C]: channel c holds 0.5 at sample c and nothing else."""
    return (0.5 * np.eye(channels)).astype(np.float32)


@pytest.mark.parametrize("channels, expect", [
    # (left, right) that each channel's unit lands on; WAV order L R C LFE Ls Rs [Lb Rb]
    (6, [(1, 0), (0, 1), (K, K), (0, 0), (K, 0), (0, K)]),
    (8, [(1, 0), (0, 1), (K, K), (0, 0), (K, 0), (0, K), (K, 0), (0, K)]),
])
def test_downmix_has_the_bs775_coefficients(channels, expect):
    from xopt.models.demucs.audio import as_channels, downmix_stereo

    out, gain = downmix_stereo(_impulses(channels))
    assert gain == 1.0 and out.shape == (2, channels) and out.dtype == np.float32
    np.testing.assert_allclose(out.T, 0.5 * np.array(expect, np.float32), atol=1e-7)
    np.testing.assert_array_equal(as_channels(_impulses(channels), 2), out)  # arrays get the same downmix


def test_downmix_is_rescaled_when_it_would_clip():
    from xopt.models.demucs.audio import downmix_stereo

    loud = np.full((6, 100), 0.9, np.float32)
    loud[:, 50:] *= -0.5
    out, gain = downmix_stereo(loud)
    peak = 0.9 * (1 + 2 * K)  # L + 0.707 C + 0.707 Ls, all at 0.9
    assert gain == pytest.approx(1 / peak, rel=1e-6)
    assert np.abs(out).max() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(out[:, 60], [-0.5, -0.5], rtol=1e-5)  # every sample scaled alike


@pytest.mark.parametrize("channels", [3, 4, 5, 7, 9, 12])
def test_other_channel_counts_are_refused_naming_the_fix(channels):
    from xopt.models.demucs.audio import as_channels

    with pytest.raises(UserError, match=rf"has {channels} channels.*ffmpeg -i in.wav -ac 2 out.wav"):
        as_channels(np.zeros((channels, 1000), np.float32), 2)


@pytest.mark.parametrize("channels", list(range(1, 11)))
def test_label_free_checks_never_crash_on_a_channel_count(channels):
    """The reported traceback: pyloudnorm's `Audio must have five channels or less` after the
    stems were written. Every count now gives its checks, the input's loudness among them."""
    from xopt.models.demucs import checks as lf
    from xopt.models.demucs.synth import generate

    mix, stems = generate(1.0, seed=channels)
    received = np.concatenate([mix] * (channels // 2 + 1))[:channels] * 0.5
    found = {c["name"]: c for c in lf.checks(mix, stems, {"source": {"samplerate": 44100, "channels": channels,
                                                                      "wav": received}})}
    assert found["input channels"]["ok"] == (channels == 2)
    assert np.isfinite(found["input loudness"]["value"])


# ---------------------------------------------------------------- through xopt run (a tiny export)

def _surround(path, channels: int, seconds: float = 0.6, gain: float = 0.3, **kw) -> np.ndarray:
    """A multichannel WAV of synthetic music (a different mix per channel); returns [C, L]."""
    from xopt.models.demucs.synth import generate

    wav = np.concatenate([generate(seconds, seed=s)[0] for s in range((channels + 1) // 2)])[:channels] * gain
    sf.write(path, wav.T, 44100, subtype="FLOAT", **kw)
    return wav.astype(np.float32)


def _stems(folder) -> dict[str, np.ndarray]:
    return {p.stem: sf.read(p, dtype="float32", always_2d=True)[0] for p in sorted(folder.glob("*.wav"))}


@pytest.mark.slow  # the tiny Demucs export takes ~30-90 s on two busy cores
@pytest.mark.parametrize("channels, fmt", [(6, "WAV"), (6, "WAVEX"), (8, "WAVEX")])
def test_surround_is_separated_as_its_stereo_downmix(channels, fmt, demucs_export, tmp_path):
    """Known answer: the stems of a 5.1/7.1 file are those of its BS.775 downmix written as a
    stereo file; the note says so on stderr; the checks afterwards do not crash."""
    from xopt.models.demucs.audio import downmix_stereo

    (tmp_path / "in").mkdir()
    wav = _surround(tmp_path / "in" / "surround.wav", channels, format=fmt)
    stereo, gain = downmix_stereo(wav)
    assert gain == 1.0
    sf.write(tmp_path / "in" / "stereo.wav", stereo.T, 44100, subtype="FLOAT")
    r = cli_process("run", "demucs", tmp_path / "in" / "surround.wav", "-o", tmp_path / "stems",
                    "--artifacts", demucs_export)
    assert r.rc == 0, r.err
    assert "Traceback" not in r.err and "five channels" not in r.err
    notes = [line for line in r.err.splitlines() if line.startswith("xopt: note:")]
    assert len(notes) == 1 and f"surround.wav has {channels} channels" in notes[0], r.err
    assert "downmixed to stereo with the ITU-R BS.775 coefficients (LFE dropped" in notes[0]
    r = cli_process("run", "demucs", tmp_path / "in" / "stereo.wav", "-o", tmp_path / "stems",
                    "--artifacts", demucs_export)
    assert r.rc == 0, r.err
    got, want = _stems(tmp_path / "stems" / "surround"), _stems(tmp_path / "stems" / "stereo")
    assert sorted(got) == ["bass", "drums", "other", "vocals"] and sorted(want) == sorted(got)
    for s in got:
        assert got[s].shape == (wav.shape[1], 2)
        np.testing.assert_array_equal(got[s], want[s])
    assert not debris(tmp_path)


@pytest.mark.slow
def test_a_loud_downmix_is_scaled_and_the_batch_record_keeps_the_notes(demucs_export, tmp_path):
    (tmp_path / "in").mkdir()
    _surround(tmp_path / "in" / "loud.wav", 6, gain=0.9)
    _surround(tmp_path / "in" / "quiet.wav", 8)
    r = cli_process("run", "demucs", tmp_path / "in", "-o", tmp_path / "stems", "--artifacts", demucs_export)
    assert r.rc == 0, r.err
    assert "loud.wav: the stereo downmix peaked above full scale: scaled by 0." in r.err
    record = json.loads((tmp_path / "stems" / "batch.json").read_text())
    items = {k.rsplit("/", 1)[-1]: v for k, v in record["items"].items()}
    assert [n["failed"] for n in items["loud.wav"]["notes"]] == [False, False]
    assert "loud.wav has 6 channels, read as 5.1 (L R C LFE Ls Rs)" in items["loud.wav"]["notes"][0]["text"]
    assert "quiet.wav has 8 channels, read as 7.1" in items["quiet.wav"]["notes"][0]["text"]
    assert len(items["quiet.wav"]["notes"]) == 1  # no rescaling needed
    for name in ("loud", "quiet"):
        stems = _stems(tmp_path / "stems" / name)
        assert len(stems) == 4 and all(v.shape[1] == 2 for v in stems.values())
