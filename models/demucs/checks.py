"""Label-free checks on a separation: they flag a broken pipeline without any references.

The motivating failure: stems at −26 to −36 dB SDR because normalisation, sample rate or the
channel layout were wrong, and nothing said so. Each check names what it measured and, when
out of range, the likely cause:
- input sample rate and channels as received versus what the model expects;
- mixture consistency: the stems should add back up to the mix (demucs does not enforce it,
  a trained model gets close); 10·log10(Σmix² / Σ(mix − Σstems)²) dB;
- clipping of the input and of the stems (samples at or beyond full scale);
- integrated loudness (ITU-R BS.1770-4, pyloudnorm) of the input, and of the stems' sum
  beside it: a missing de-normalisation (stems left in the model's unit-variance scale)
  shows as a sum far louder or quieter than the input.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

CONSISTENCY_MIN_DB = 10.0
CLIP_LEVEL = 0.999
CLIP_MAX_SHARE = 1e-3
LOUDNESS_RANGE = (-40.0, -3.0)  # LUFS: broadcast/streaming masters sit around -23 to -8
LOUDNESS_MATCH_LU = 6.0


def _check(name, value, unit, expected, ok, message, info) -> dict:
    if not ok and (info or {}).get("weights", {}).get("kind") == "seeded-random" and "weights" in message:
        message += " (expected with seeded-random weights)"
    v = None if value is None or not np.isfinite(value) else round(float(value), 3)
    return {"name": name, "value": v, "unit": unit, "expected": expected, "ok": bool(ok), "message": "" if ok else message}


def loudness(wav: np.ndarray, rate: int) -> float | None:
    """Integrated loudness in LUFS of [C, L] audio; None below one 400 ms gating block."""
    from xopt.extras import require

    if wav.shape[-1] < int(0.4 * rate) + 1:
        return None
    if wav.shape[0] > 5:
        # pyloudnorm weighs at most five channels (L R C Ls Rs): wider audio is measured as the
        # stereo the model was given (5.1/7.1 downmix), any other layout as its channel mean
        from xopt.models.demucs.audio import SURROUND, downmix_stereo

        wav = downmix_stereo(wav)[0] if wav.shape[0] in SURROUND else wav.mean(axis=0, keepdims=True)
    pyln = require("pyloudnorm", "demucs", "for loudness checks")
    with np.errstate(divide="ignore"):
        value = float(pyln.Meter(rate).integrated_loudness(np.ascontiguousarray(wav.T, np.float64)))
    return value if np.isfinite(value) else float("-inf")


def consistency_db(mix: np.ndarray, stems: Mapping[str, np.ndarray]) -> float:
    total = np.sum([np.asarray(s, np.float64) for s in stems.values()], axis=0)
    n = min(total.shape[-1], mix.shape[-1])
    m = np.asarray(mix, np.float64)[..., :n]
    err = np.sum((m - total[..., :n]) ** 2)
    return float(10 * np.log10((np.sum(m ** 2) + 1e-12) / (err + 1e-12)))


def _clip_share(wav) -> float:
    return float(np.mean(np.abs(np.asarray(wav)) >= CLIP_LEVEL))


def checks(raw, output: Mapping[str, np.ndarray], info: Mapping[str, Any] | None = None) -> list[dict]:
    """`raw`: the mixture [C, L] the pipeline separated (at the model's rate); `output`: {stem: [C, L]}.
    `info["source"]` (optional): {"samplerate", "channels", "wav"?} of the input as received;
    `info["model"]`: {"samplerate", "channels"} the model expects (default 44100 Hz stereo)."""
    info = dict(info or {})
    model = {"samplerate": 44100, "channels": 2, **(info.get("model") or {})}
    src = info.get("source") or {}
    out: list[dict] = []
    rate, ch = src.get("samplerate"), src.get("channels")
    if rate is not None:
        out.append(_check("input sample rate", rate, "Hz", f"{model['samplerate']} Hz", rate == model["samplerate"],
                          f"the input is {rate} Hz and the model expects {model['samplerate']} Hz: xopt resampled it; "
                          "a pipeline that feeds it unresampled gets detuned, badly separated stems", info))
    if ch is not None:
        out.append(_check("input channels", ch, "", f"{model['channels']}", ch == model["channels"],
                          f"the input has {ch} channel(s) and the model expects {model['channels']}: "
                          f"{'mono was duplicated' if ch == 1 else 'it was downmixed to stereo (ITU-R BS.775)'}; "
                          "a pipeline that feeds it otherwise separates something else", info))
    mix = np.asarray(raw, np.float32)
    c = consistency_db(mix, output)
    out.append(_check("mixture consistency", c, "dB", f"at least {CONSISTENCY_MIN_DB:g} dB", c >= CONSISTENCY_MIN_DB,
                      f"the stems sum to the mix at {c:.1f} dB: the input was probably not normalised the way the "
                      "model expects (or the output not de-normalised), or the weights are untrained", info))
    received = src.get("wav", mix)
    share = _clip_share(received)
    out.append(_check("input clipping", 100 * share, "% of samples", f"at most {100 * CLIP_MAX_SHARE:g} %",
                      share <= CLIP_MAX_SHARE,
                      f"{100 * share:.2f} % of the input's samples are at full scale: it clips, or was scaled up "
                      "(e.g. integer PCM not divided by its full scale)", info))
    worst = max(output, key=lambda s: _clip_share(output[s]))
    share = _clip_share(output[worst])
    out.append(_check("output clipping", 100 * share, "% of samples", f"at most {100 * CLIP_MAX_SHARE:g} %",
                      share <= CLIP_MAX_SHARE,
                      f"{100 * share:.2f} % of the {worst} stem's samples are at full scale: the stems are scaled "
                      "wrongly (de-normalisation) or the weights are untrained", info))
    lin = loudness(np.asarray(received, np.float64), int(rate or model["samplerate"]))
    if lin is not None:
        lo, hi = LOUDNESS_RANGE
        out.append(_check("input loudness", lin, "LUFS", f"{lo:g} to {hi:g} LUFS", lo <= lin <= hi,
                          f"the input's integrated loudness is {lin:.1f} LUFS: "
                          + ("far too quiet (scaled down twice, or silence)" if lin < lo else
                             "too loud for audio on [-1, 1] (not scaled to full scale 1.0)"), info))
        total = np.sum([np.asarray(s, np.float64) for s in output.values()], axis=0)
        lout = loudness(total, model["samplerate"])
        if lout is not None and np.isfinite(lin):
            gap = lout - lin
            out.append(_check("stems' loudness vs input", gap, "LU", f"within ±{LOUDNESS_MATCH_LU:g} LU",
                              abs(gap) <= LOUDNESS_MATCH_LU,
                              f"the stems' sum is {abs(gap):.1f} LU {'louder' if gap > 0 else 'quieter'} than the "
                              "input: the output was probably not de-normalised (x·std + mean), or the weights are "
                              "untrained", info))
    return out


def run_checks(src: Path, written: list[Path], info: Mapping[str, Any] | None = None) -> list[dict]:
    """The checks on what `xopt run demucs` read and wrote (dst/<track>/<stem>.wav)."""
    from xopt.models.demucs import audio
    from xopt.models.demucs.eval_data import read_audio

    stems, rates = {}, set()
    for p in written:
        stems[Path(p).stem], r = read_audio(Path(p))
        rates.add(r)
    rate = rates.pop() if len(rates) == 1 else 44100
    wav, src_rate, _ = audio.read_stored(Path(src))  # as the pipeline read it (a file that ends early too)
    channels = next(iter(stems.values())).shape[0] if stems else 2
    mix = audio.resample(audio.as_channels(wav, channels), src_rate, rate)  # the pipeline's order
    model = {"samplerate": rate, "channels": channels, **((info or {}).get("model") or {})}
    return checks(mix, stems, {**(info or {}), "source": {"samplerate": src_rate, "channels": wav.shape[0], "wav": wav},
                               "model": model})
