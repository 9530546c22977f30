"""Demucs previews: the stems' spectrograms on one dB scale (an error 40 dB down reads 40 dB
down), the players, and a tiny profile's report opened in a headless browser (slow)."""
from __future__ import annotations

import numpy as np
import pytest

from xopt.models.demucs.preview import FLOOR_DB, RATE, log_spectrogram, previews


def _outputs(sources: np.ndarray) -> dict:
    """Core outputs of a time-domain graph ([B, S, C, L] from wave_out; spec_out a placeholder)."""
    return {"spec_out": np.zeros((1, 8, 1, 1), np.float32), "wave_out": sources[None].astype(np.float32)}


def test_difference_spectrogram_sits_at_the_error_level():
    t = np.arange(RATE // 2) / RATE
    tone = np.stack([np.sin(2 * np.pi * 440 * t)] * 2)
    db, peak = log_spectrogram(tone)
    assert db.max() == pytest.approx(0.0, abs=1e-6) and db.min() >= FLOOR_DB
    err, _ = log_spectrogram(0.01 * tone, peak)  # 1% of the amplitude: -40 dB
    assert err.max() == pytest.approx(-40.0, abs=0.1)


def test_hook_writes_mix_stems_players_and_differences(tmp_path):
    rng = np.random.default_rng(0)
    mix = rng.standard_normal((1, 2, RATE // 4)).astype(np.float32)
    ref = rng.standard_normal((4, 2, RATE // 4))
    out = ref + 1e-3 * rng.standard_normal(ref.shape)
    recs = previews([{"mix": mix, "spec": np.zeros((1, 4, 1, 1), np.float32)}], [_outputs(ref)], [_outputs(out)],
                    tmp_path)
    groups = [r["group"] for r in recs]
    assert groups[:2] == ["mix", "mix"] and groups.count("vocals") == 5
    players = [r for r in recs if r["kind"] == "audio"]
    assert len(players) == 9 and all((tmp_path / r["file"]).stat().st_size > 100 for r in players)
    assert all(r["seconds"] == pytest.approx(0.25, abs=1e-3) for r in players)
    sdr = next(r for r in recs if r["role"] == "difference" and r["group"] == "drums")["caption"]
    assert "SDR against FP32 60." in sdr  # 1e-3 of unit-variance noise: 60 dB


@pytest.mark.slow
def test_demucs_report_in_a_browser(tmp_path):
    from browser import profile_and_open
    from xopt.export.pipeline import export_model

    export_model("demucs", ["fp32", "fp16"], out_dir=tmp_path / "art", config="tiny")
    report, state = profile_and_open("demucs", ["fp32", "fp16"], tmp_path / "art", tmp_path, frames=3)
    assert len(state["audio"]) == 1 + 4 + 4  # the mix, FP32 per stem once, the variant per stem
    assert {"drums: FP32", "vocals: variant − FP32"} <= {i["alt"] for i in state["images"]}
