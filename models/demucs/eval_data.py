"""MUSDB18-HQ in its folder layout: DATA is a folder of track folders, each with mixture.wav and
one WAV per stem (drums, bass, other, vocals), or the dataset root with train/ and test/
(`--subset`, default test: the SiSEC evaluation split). Every file is opened (header only)
while the dataset is read, so an unreadable one is named before any separation runs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from xopt.errors import UserError
from xopt.extras import require
from xopt.spec import EvalDataset, EvalItem

STEMS = ("drums", "bass", "other", "vocals")  # MUSDB18's targets, in demucs' order
AUDIO_SUFFIXES = (".wav", ".flac")
SUBSETS = ("train", "test")


def audio_file(folder: Path, stem: str) -> Path | None:
    return next((folder / f"{stem}{s}" for s in AUDIO_SUFFIXES if (folder / f"{stem}{s}").is_file()), None)


def info(path: Path) -> dict:
    """Sample rate, channels and length from the file's header; an unreadable file is named."""
    sf = require("soundfile", "demucs")
    try:
        i = sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise UserError(f"cannot read {path} as audio ({str(exc).splitlines()[0][:160]})",
                        "pass WAV or FLAC files (MUSDB18's .stem.mp4 need converting to the HQ layout, "
                        "e.g. with musdb's musdbconvert)") from exc
    if i.frames == 0:
        raise UserError(f"{path} holds no samples", "replace the empty file")
    return {"samplerate": int(i.samplerate), "channels": int(i.channels), "frames": int(i.frames)}


def _root(data, subset: str | None) -> tuple[Path, str]:
    if data is None:
        raise UserError("no dataset given", "pass DATA: a folder of MUSDB18-HQ track folders, or the dataset root")
    root = Path(data)
    if not root.is_dir():
        raise UserError(f"dataset {root} is not a directory", "pass the MUSDB18-HQ folder")
    has_subsets = [s for s in SUBSETS if (root / s).is_dir()]
    if subset and subset not in SUBSETS:
        raise UserError(f"--subset {subset!r} is not one of {', '.join(SUBSETS)}", "pass --subset train or --subset test")
    if has_subsets:
        chosen = subset or "test"
        if chosen not in has_subsets:
            raise UserError(f"{root} has no {chosen}/ folder", f"pass --subset {has_subsets[0]}")
        return root / chosen, f"MUSDB18-HQ {chosen} subset"
    if subset:
        raise UserError(f"--subset {subset} given but {root} has no train/ or test/ folder",
                        "pass the dataset root, or drop --subset for a folder of tracks")
    return root, "MUSDB18-HQ track folders"


def read_dataset(data, options: Mapping[str, str | None]) -> EvalDataset:
    from xopt.models.demucs.evaluate import method

    opts = dict(options or {})
    folder, layout = _root(data, opts.get("subset"))
    seconds = _seconds(opts.get("seconds"))
    sdr = (opts.get("sdr") or "museval").lower()
    if sdr not in ("museval", "plain"):
        raise UserError(f"--sdr {opts.get('sdr')!r} is not museval or plain", "pass --sdr museval or --sdr plain")
    bss = sdr == "museval"
    tracks = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not tracks:
        loose = [p.name for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES + (".mp4",)]
        hint = " (it holds loose audio files: put each track in its own folder)" if loose else ""
        raise UserError(f"{folder} holds no track folders{hint}",
                        "use DATA/<track>/mixture.wav with drums/bass/other/vocals.wav beside it")
    notes: list[str] = []
    missing: dict[str, list[str]] = {}
    items = []
    for t in tracks:
        files = {s: audio_file(t, s) for s in ("mixture",) + STEMS}
        absent = [s for s, p in files.items() if p is None]
        if absent:
            missing[t.name] = absent
            continue
        facts = {s: info(p) for s, p in files.items()}
        mix = facts["mixture"]
        off = [s for s in STEMS if facts[s]["frames"] != mix["frames"] or facts[s]["samplerate"] != mix["samplerate"]]
        if off:
            notes.append(f"{t.name}: {', '.join(off)} differ from the mixture in length or rate (resampled to "
                         "the reference's rate and trimmed to the shortest when scored)")
        frames = mix["frames"] if seconds is None else min(mix["frames"], int(seconds * mix["samplerate"]))
        items.append(EvalItem(t.name, files["mixture"], {s: files[s] for s in STEMS},
                              {"source": mix, "frames": frames, "duration_s": frames / mix["samplerate"],
                               "museval": bss}))
    if missing:
        text = "; ".join(f"{name} lacks {', '.join(s + '.wav' for s in absent)}" for name, absent in
                         list(missing.items())[:6]) + (f" (and {len(missing) - 6} more)" if len(missing) > 6 else "")
        if not opts.get("skip_missing"):
            raise UserError(f"{len(missing)} of {len(tracks)} tracks in {folder} are incomplete: {text}",
                            "add the missing stems, or pass --skip-missing to score the complete tracks")
        notes.append(f"skipped {len(missing)} incomplete tracks: {text}")
    if seconds is not None:
        notes.append(f"--seconds {seconds:g}: scored the first {seconds:g} s of each track")
    return EvalDataset(f"{layout} ({folder}, {len(items)} tracks)", items, notes, method(bss))


def _seconds(value) -> float | None:
    if value in (None, ""):
        return None
    try:
        s = float(value)
    except ValueError:
        s = -1.0
    if not s > 0:
        raise UserError(f"--seconds {value!r} is not a positive number", "pass e.g. --seconds 30")
    return s


def read_audio(path: Path, frames: int | None = None):
    """([C, L] float32, sample rate) as stored: no resampling, no channel change."""
    from xopt.models.demucs.audio import validate

    sf = require("soundfile", "demucs")
    try:
        data, rate = sf.read(str(path), frames=-1 if frames is None else frames, dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise UserError(f"cannot read {path} as audio ({str(exc).splitlines()[0][:160]})",
                        "pass a WAV or FLAC file") from exc
    return validate(data.T, str(path)), int(rate)
