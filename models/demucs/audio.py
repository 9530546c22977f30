"""Audio in and out for the Demucs pipeline: a real audio library, no ffmpeg.

soundfile (libsndfile) reads WAV/FLAC/OGG/AIFF of any PCM width; soxr resamples to the
model rate. Everything is checked on the way in so a bad file becomes one clear error:
`inspect` reads the header alone (what `xopt run` checks before it exports anything),
`read_track` the samples, saying when the file ends before its header's length.

Channels: mono is duplicated as demucs does; 5.1 and 7.1 are downmixed to stereo with the
ITU-R BS.775 coefficients; any other count is refused (no standard stereo downmix exists).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from xopt.atomic import atomic_path
from xopt.errors import UserError
from xopt.extras import require

# WAV channel order (WAVEFORMATEXTENSIBLE): L R C LFE, then the surround pairs (Ls Rs [Lb Rb]).
SURROUND = {6: "5.1 (L R C LFE Ls Rs)", 8: "7.1 (L R C LFE Ls Rs Lb Rb)"}
# channel masks that mean those layouts: 5.1 with back or side surrounds; 7.1 with side and back
# surrounds, or Microsoft's older 7.1 (KSAUDIO_SPEAKER_7POINT1, what libsndfile writes) whose
# last pair sits between the front and the centre: either way a pair at -3 dB to its side
_SURROUND_MASKS = {6: {0x3F, 0x60F}, 8: {0x63F, 0xFF}}
BS775_GAIN = float(np.sqrt(0.5))  # -3 dB for the centre and each surround channel
CONVERT_FIX = "convert it to stereo first, e.g. ffmpeg -i in.wav -ac 2 out.wav"
_READ_BLOCK = 8192  # frames per read: a decoder that fails mid-file loses at most this much


def layout_note(channels: int, mask: int | None = None, where: str = "the audio", target: int = 2) -> str | None:
    """What becomes of `channels` on the way to `target` (2) channels: None when nothing
    needs saying (stereo; mono, duplicated as demucs does), the downmix note for 5.1 and 7.1;
    a UserError for a count or a WAV channel mask with no standard stereo downmix."""
    if channels in (1, target):
        return None
    if target == 2 and channels in SURROUND and (mask is None or mask in _SURROUND_MASKS[channels]):
        return (f"{where} has {channels} channels, read as {SURROUND[channels]}: downmixed to stereo with the "
                "ITU-R BS.775 coefficients (LFE dropped, centre and surrounds at -3 dB)")
    laid = f" (channel mask 0x{mask:X}, not 5.1 or 7.1)" if mask is not None and channels in SURROUND else ""
    raise UserError(f"{where} has {channels} channels{laid}, and only mono, stereo, 5.1 and 7.1 have a standard "
                    "stereo downmix", CONVERT_FIX)


def downmix_stereo(wav: np.ndarray) -> tuple[np.ndarray, float]:
    """[6 or 8, L] in WAV channel order -> ([2, L], gain): ITU-R BS.775 (Lo = L + 0.707 C +
    0.707 Ls [+ 0.707 Lb], Ro likewise; LFE dropped), then scaled by `gain` < 1 when the sum
    would clip (peak above 1.0), else gain 1."""
    wav = np.asarray(wav, np.float32)
    k = np.float32(BS775_GAIN)
    left = wav[0] + k * (wav[2] + wav[4::2].sum(axis=0))
    right = wav[1] + k * (wav[2] + wav[5::2].sum(axis=0))
    out = np.stack([left, right]).astype(np.float32)
    peak = float(np.abs(out).max()) if out.size else 0.0
    gain = 1.0 / peak if peak > 1.0 else 1.0
    return (out * np.float32(gain) if gain != 1.0 else out), gain


def as_channels(wav: np.ndarray, channels: int = 2) -> np.ndarray:
    """[C, L] with the model's channel count: mono is duplicated (demucs' `convert_audio_channels`),
    5.1 and 7.1 are downmixed to stereo (`downmix_stereo`); other counts are a UserError."""
    wav = np.asarray(wav)
    if wav.ndim == 1:
        wav = wav[None]
    if wav.ndim != 2:
        raise UserError(f"audio must be [channels, samples] or [samples], got shape {wav.shape}",
                        "pass a 1-D or 2-D array")
    if wav.shape[0] > 16 and wav.shape[1] <= 16:
        raise UserError(f"audio of shape {wav.shape} looks like [samples, channels]", "transpose it to [channels, samples]")
    if wav.shape[0] == channels:
        return wav
    if wav.shape[0] == 1:
        return np.repeat(wav, channels, axis=0)
    if channels == 1:
        return wav.mean(axis=0, keepdims=True)
    layout_note(wav.shape[0], target=channels)  # raises for a count with no standard downmix
    return downmix_stereo(wav)[0]


def validate(wav: np.ndarray, what: str = "audio") -> np.ndarray:
    wav = np.asarray(wav)
    if wav.dtype.kind not in "fiu":
        raise UserError(f"{what} has dtype {wav.dtype}", "pass float or integer PCM samples")
    if wav.shape[-1] == 0:
        raise UserError(f"{what} is empty (0 samples)", "pass a file with audio in it")
    if wav.dtype.kind in "iu":
        info = np.iinfo(wav.dtype)
        mid = (int(info.max) + int(info.min) + 1) / 2  # 0 for signed, 128 for uint8 PCM
        wav = (wav.astype(np.float64) - mid) / (info.max - mid + 1)
    wav = wav.astype(np.float32)
    if not np.isfinite(wav).all():
        bad = int((~np.isfinite(wav)).sum())
        raise UserError(f"{what} contains {bad} NaN/Inf samples", "fix or re-encode the audio")
    return wav


def resample(wav: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    if src_rate == dst_rate:
        return wav
    if src_rate <= 0:
        raise UserError(f"sample rate {src_rate} is invalid", "pass a positive sample rate")
    soxr = require("soxr", "demucs")
    out = soxr.resample(np.ascontiguousarray(wav.T, dtype=np.float32), src_rate, dst_rate, quality="HQ")
    return np.ascontiguousarray(np.asarray(out, dtype=np.float32).reshape(-1, wav.shape[0]).T)


def _unreadable(path: Path, exc: BaseException) -> UserError:
    return UserError(f"cannot read {path} as audio ({str(exc).splitlines()[0][:200] if str(exc) else exc})",
                     "pass a WAV, FLAC, OGG or AIFF file (MP3 needs converting first)")


def _open(path: Path):
    sf = require("soundfile", "demucs")
    if not path.is_file():
        raise UserError(f"no audio file at {path}", "check the path")
    if path.stat().st_size == 0:
        raise UserError(f"{path} is empty (0 bytes)", "pass a file with audio in it")
    try:
        return sf.SoundFile(str(path))
    except (RuntimeError, sf.LibsndfileError, OSError) as exc:
        raise _unreadable(path, exc) from exc


def _header_frames(f) -> int:
    """The length the file's header promises. libsndfile clamps `frames` to the bytes present;
    its header log keeps what WAV/AIFF/RF64 headers said (a fact/COMM/ds64 frame count, or a
    data chunk larger than the file)."""
    frames = int(f.frames)
    if f.format not in ("WAV", "WAVEX", "RF64", "AIFF", "W64"):
        return frames  # FLAC: STREAMINFO's count is `frames` already
    text = f.extra_info or ""
    said = [int(m) for m in re.findall(r"(?im)^\s*frames\s*:\s*(\d+)\s*$", text)]
    data = re.search(r"(?m)^data\s*:\s*(\d+) \(should be \d+\)", text)
    align = re.search(r"(?m)^\s*Block Align\s*:\s*(\d+)", text)
    if data and align and int(align.group(1)) > 0:
        said.append(int(data.group(1)) // int(align.group(1)))
    return max([frames, *said])


def _mask(f) -> int | None:
    m = re.search(r"Channel Mask\s*:\s*0x([0-9A-Fa-f]+)", f.extra_info or "")
    return int(m.group(1), 16) if m and int(m.group(1), 16) else None


def inspect(path, channels: int = 2) -> dict:
    """The header of an audio file (nothing decoded): format, channels, rate, length, and the
    note a 5.1/7.1 downmix will get. UserError for what `read_track` would refuse."""
    path = Path(path)
    with _open(path) as f:
        facts = {"kind": "audio", "format": f.format, "channels": int(f.channels), "samplerate": int(f.samplerate),
                 "frames": _header_frames(f)}
        mask = _mask(f)
    if facts["samplerate"] <= 0:
        raise UserError(f"{path} has sample rate {facts['samplerate']}", "fix or re-encode the audio")
    if facts["frames"] == 0:
        raise UserError(f"{path} is empty (0 samples)", "pass a file with audio in it")
    facts["seconds"] = facts["frames"] / facts["samplerate"]
    note = layout_note(facts["channels"], mask, str(path), channels)
    facts["notes"] = [note] if note else []
    return facts


def read_stored(path) -> tuple[np.ndarray, int, dict]:
    """([C, L] float32, sample rate, facts) as stored, no resampling or channel change; facts:
    channels, frames read, the header's frames, channel mask, and `ends_early` (a sentence, or
    None) when fewer frames could be read than the header promises."""
    sf = require("soundfile", "demucs")
    path = Path(path)
    blocks, error = [], None
    with _open(path) as f:
        expected, rate, mask, fmt = _header_frames(f), int(f.samplerate), _mask(f), f.format
        hint = "Last page lacks an end-of-stream bit" in (f.extra_info or "")  # Ogg: cut off
        while True:
            try:
                block = f.read(_READ_BLOCK, dtype="float32", always_2d=True)
            except (RuntimeError, sf.LibsndfileError) as exc:
                if not blocks:
                    raise _unreadable(path, exc) from exc
                error = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
                break
            if not len(block):
                break
            blocks.append(block)
        channels = int(f.channels)
    data = np.concatenate(blocks) if blocks else np.zeros((0, channels), np.float32)
    wav = validate(data.T, str(path))
    got = wav.shape[-1]
    ends_early = None
    if got < expected or error or (hint and fmt == "OGG"):
        of = f" of {expected}" if expected > got else ""
        secs = f" of {expected / rate:.1f} s" if expected > got else ""
        why = f" ({error})" if error else ""
        ends_early = f"{path}: read {got}{of} frames ({got / rate:.1f} s{secs}): the file ends early{why}"
    return wav, rate, {"channels": channels, "frames": got, "header_frames": expected, "mask": mask,
                       "ends_early": ends_early}


def read_track(path, samplerate: int, channels: int = 2) -> tuple[np.ndarray, dict]:
    """([channels, L] float32 at `samplerate`, facts) from an audio file: `read_stored`'s facts
    and "notes", the downmix note of a 5.1/7.1 file."""
    wav, rate, facts = read_stored(path)
    note = layout_note(wav.shape[0], facts["mask"], str(path), channels)
    facts["notes"] = [note] if note else []
    if note:  # 5.1/7.1: downmixed before resampling (a third of the channels to resample)
        wav, gain = downmix_stereo(wav)
        if gain < 1.0:
            facts["notes"].append(f"{path}: the stereo downmix peaked above full scale: scaled by {gain:.3f} "
                                  f"({20 * np.log10(gain):.1f} dB) so that it does not clip")
    return as_channels(resample(wav, rate, samplerate), channels), facts


def read(path, samplerate: int, channels: int = 2) -> np.ndarray:
    """[channels, L] float32 at `samplerate` from an audio file."""
    return read_track(path, samplerate, channels)[0]


def write(path, wav: np.ndarray, samplerate: int, force: bool = False, subtype: str = "FLOAT") -> Path:
    """One WAV file, written atomically (refuses to overwrite without `force`)."""
    sf = require("soundfile", "demucs")
    with atomic_path(path, force=force) as tmp:
        sf.write(str(tmp), np.ascontiguousarray(np.asarray(wav, dtype=np.float32).T), samplerate,
                 subtype=subtype, format="WAV")
    return Path(path)
