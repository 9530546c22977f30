"""Demucs on the host, numpy only: what `xopt run demucs` and an embedding app use.

The exported graph is the real-valued core; this module does the rest exactly as demucs
does: track normalisation, STFT into complex-as-channels, the core, CaC -> complex,
iSTFT, time + spectral branch sum, overlap-add over the track, optional shifts. Also the
drift metric (per-stem SDR), the noise-floor perturbation and the profile inputs the spec
declares.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from xopt.errors import OutputExistsError, UserError
from xopt.models.demucs import audio
from xopt.models.demucs import dsp
from xopt.models.demucs import ola
from xopt.models.demucs import sdr as sdrlib
from xopt.models.demucs.synth import SOURCES, generate
from xopt.runtime.pipeline import Pipeline

# overlap_host: run the STFT/iSTFT of neighbouring segments on a helper thread during each
# session call (same numbers). Off by default: on a 2-core CPU the session's intra-op threads
# already take both cores and the extra thread oversubscribes them; turn it on where cores
# are spare (more cores than intra-op threads, or a GPU session).
DEFAULTS = {"sources": list(SOURCES), "samplerate": 44100, "audio_channels": 2, "nfft": 4096,
            "segment_samples": 343980, "spectral": True, "overlap": 0.25, "shifts": 0,
            "transition_power": 1.0, "batch": 1, "subtype": "FLOAT", "overlap_host": False}


_SIX_STEMS = ["drums", "bass", "other", "vocals", "guitar", "piano"]  # htdemucs_6s order


def settings(config: Mapping[str, Any] | None, session=None) -> dict:
    """Host-side facts of an export: from a built config (Built.config), or derived from a
    preset config as the manifest stores it, then checked against the graph's own shapes
    (a checkpoint's architecture may differ from the preset it was exported under)."""
    config = dict(config or {})
    kw = dict(config.get("kwargs") or {})
    derived = {k: kw[k] for k in ("sources", "samplerate", "audio_channels", "nfft") if k in kw}
    if "arch" in config:
        derived["spectral"] = config["arch"] != "demucs"
    seconds = config.get("segment") or (kw.get("segment") if config.get("arch", "htdemucs") == "htdemucs" else None)
    if "segment_samples" not in config and (seconds or "arch" in config):
        rate = derived.get("samplerate", DEFAULTS["samplerate"])
        derived["segment_samples"] = int(Fraction(seconds or 7.8).limit_denominator(1000) * rate)
    cfg = {**DEFAULTS, **derived, **{k: v for k, v in config.items() if k in DEFAULTS and v is not None}}
    _from_graph(cfg, session)
    if cfg["segment_samples"] <= 0 or cfg["batch"] < 1 or not 0 <= cfg["overlap"] < 1:
        raise UserError(f"invalid Demucs settings (segment_samples={cfg['segment_samples']}, "
                        f"batch={cfg['batch']}, overlap={cfg['overlap']})",
                        "use a positive segment and batch and an overlap in [0, 1)")
    return cfg


def _from_graph(cfg: dict, session) -> None:
    shapes = getattr(session, "input_shapes", None) or {}
    mix, spec = shapes.get("mix"), shapes.get("spec")
    if mix and isinstance(mix[-1], int):
        cfg["segment_samples"] = mix[-1]
    if spec and isinstance(spec[-2], int):
        cfg["spectral"] = spec[-2] > 1
        if cfg["spectral"]:
            cfg["nfft"] = 2 * spec[-2]
    out = (getattr(session, "output_shapes", None) or {}).get("wave_out")
    if out and isinstance(out[1], int) and out[1] != len(cfg["sources"]):
        cfg["sources"] = _SIX_STEMS if out[1] == 6 else [f"source{i}" for i in range(out[1])]


def core_feed(segments: np.ndarray, nfft: int = 4096, spectral: bool = True) -> dict[str, np.ndarray]:
    """The graph inputs for a batch of (normalised) segments [B, C, L]."""
    segments = np.ascontiguousarray(segments, dtype=np.float32)
    if spectral:
        spec = dsp.core_spec(segments, nfft)
    else:  # time-domain Demucs v2: [B, 2C, 1, 1] placeholder, see DemucsCore
        spec = np.zeros((segments.shape[0], 2 * segments.shape[1], 1, 1), dtype=np.float32)
    return {"mix": segments, "spec": spec}


def is_spectral(outputs: Mapping[str, np.ndarray]) -> bool:
    return outputs["spec_out"].shape[-2] > 1


def sources_of(outputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """[B, S, C, L] separated sources from the core's two outputs."""
    if not is_spectral(outputs):
        return np.asarray(outputs["wave_out"], dtype=np.float32)
    return dsp.reassemble(outputs["spec_out"], outputs["wave_out"])


def separate_segments(session, segments: np.ndarray, nfft: int = 4096, spectral: bool = True) -> np.ndarray:
    """One session call on [B, C, L] segments -> sources [B, S, C, L]."""
    return sources_of(session.run(core_feed(segments, nfft, spectral)))


def separate(session, wav: np.ndarray, config: Mapping[str, Any] | None = None, seed: int = 0,
             progress: Callable[[Iterable], Iterable] | None = None) -> np.ndarray:
    """[S, C, L] sources for a [C, L] track at the model rate, as demucs' `Separator` + `apply_model`."""
    cfg = settings(config)
    wav = audio.as_channels(audio.validate(wav), cfg["audio_channels"])
    mean, std = dsp.track_stats(wav)
    norm = (wav - mean) / std

    def prepare(batch: np.ndarray) -> dict[str, np.ndarray]:
        return core_feed(batch, cfg["nfft"], cfg["spectral"])

    run, stages = _stages(session, prepare, cfg["overlap_host"])
    out = ola.apply_track(run, norm, cfg["segment_samples"], cfg["samplerate"], cfg["overlap"],
                          cfg["transition_power"], cfg["shifts"], cfg["batch"], np.random.default_rng(seed),
                          progress=progress, **stages)
    return (out * std + mean).astype(np.float32)


def _stages(session, prepare, overlap_host: bool) -> tuple[Callable, dict]:
    """STFT (prepare), session (run), iSTFT (finish): with `overlap_host` the host stages of the
    neighbouring batches run on a helper thread during each session call (same numbers)."""
    if overlap_host:
        return session.run, {"prepare": prepare, "finish": sources_of}
    return (lambda batch: sources_of(session.run(prepare(batch)))), {}


def track_seconds(targets: Mapping[str, Any] | None) -> float:
    """Length of the synthetic tracks end-to-end runs use (profile target `track_seconds`);
    10 s (two 7.8 s segments with overlap) keeps `xopt profile` affordable on a CPU."""
    return float((targets or {}).get("track_seconds", 10.0))


class SeparationPipeline(Pipeline):
    """Music source separation: a track (array or file) in, one array or WAV per stem out."""
    progress_unit = "segment batches"

    input_kinds = ("audio",)
    e2e_runs = 3  # each end-to-end run separates a whole synthetic track

    def __init__(self, session, config: dict | None = None, variant: dict | None = None):
        super().__init__(session, config, variant)
        self.cfg = settings(self.config, session)

    @property
    def sources(self) -> list[str]:
        return list(self.cfg["sources"])

    def __call__(self, raw, progress=None) -> dict[str, np.ndarray]:
        wav = raw
        if isinstance(raw, (str, Path)):
            wav = audio.read(raw, self.cfg["samplerate"], self.cfg["audio_channels"])
        out = separate(self.session, wav, self.cfg, progress=progress)
        return dict(zip(self.sources, out))

    @classmethod
    def check_input(cls, path: Path) -> dict:
        """The audio header: readable, not empty, a channel layout with a stereo downmix."""
        return audio.inspect(path, DEFAULTS["audio_channels"])

    def raw_samples(self, n: int, targets: dict, seed: int = 0) -> list[np.ndarray]:
        seconds = track_seconds(targets)
        return [generate(seconds, seed + i, self.cfg["samplerate"], self.cfg["audio_channels"])[0] for i in range(n)]

    def outputs_for(self, src: Path, dst: Path) -> list[Path]:
        return [Path(dst) / Path(src).stem / f"{stem}.wav" for stem in self.sources]

    def process_file(self, src: Path, dst: Path, force: bool = False,
                     progress: Callable[[Iterable], Iterable] | None = None) -> list[Path]:
        """Write dst/<track name>/<stem>.wav for every stem (checked before any work)."""
        src, dst = Path(src), Path(dst)
        targets = self.outputs_for(src, dst)
        if not force:
            for t in targets:
                if t.exists():
                    raise OutputExistsError(t)
        wav, facts = audio.read_track(src, self.cfg["samplerate"], self.cfg["audio_channels"])
        for text in facts["notes"]:  # a 5.1/7.1 downmix
            self.note(text)
        stems = self(wav, progress=progress)
        written = [audio.write(t, stems[s], self.cfg["samplerate"], force=force, subtype=self.cfg["subtype"])
                   for s, t in zip(self.sources, targets)]
        if facts["ends_early"]:  # what was there is separated; the run says what was missing
            self.note(facts["ends_early"], failed=True)
        return written


# --- the spec's numpy callables -----------------------------------------------------------

def drift(ref: Mapping[str, np.ndarray], out: Mapping[str, np.ndarray], feed=None,
          sources: Iterable[str] | None = None) -> dict:
    """Per-stem SDR (dB) of `out`'s separated sources against `ref`'s, and their mean/min."""
    r, o = sources_of(ref), sources_of(out)
    if not np.isfinite(o).all():
        return {"sdr_mean_db": float("-inf"), "sdr_min_db": float("-inf"), "sdr_db": {}, "finite": False}
    scores = sdrlib.per_source(r, o)
    names = list(sources or (SOURCES if len(scores) == len(SOURCES) else [f"source{i}" for i in range(len(scores))]))
    return {"sdr_mean_db": float(np.mean(scores)), "sdr_min_db": float(np.min(scores)),
            "sdr_db": {n: float(v) for n, v in zip(names, scores)}, "finite": True}


def perturb(feed: Mapping[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """±1 LSB of 16-bit PCM (relative to the segment's peak) on the mix; spec recomputed from it."""
    mix = np.asarray(feed["mix"], dtype=np.float32)
    lsb = max(float(np.abs(mix).max()), 1e-9) / 32767.0
    noisy = mix + lsb * rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=mix.shape)
    spec = feed["spec"]
    spectral = spec.shape[-2] > 1
    return core_feed(noisy, 2 * spec.shape[-2] if spectral else 4096, spectral)


def segment_feed(length: int, batch: int = 1, seed: int = 0, nfft: int = 4096, spectral: bool = True,
                 channels: int = 2, samplerate: int = 44100) -> dict[str, np.ndarray]:
    """A batch of normalised synthetic-music segments of `length` samples, as graph inputs."""
    segs = []
    for b in range(batch):
        mix, _ = generate(length / samplerate, seed * 1009 + b, samplerate, channels)
        mix = mix[:, :length]
        mean, std = dsp.track_stats(mix)
        segs.append((mix - mean) / std)
    return core_feed(np.stack(segs), nfft, spectral)


def profile_inputs(targets: Mapping[str, Any], n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """`n` feeds for the exported graph: its config (under targets["config"]) sets the segment,
    `batch` (xopt profile --batch) the batch, 1 by default: the profile's `max_batch` is what
    fit-to-budget searches up to on a GPU, and four 7.8 s segments at once took a whole
    htdemucs profile past 24 GB of host memory."""
    t = dict(targets or {})
    if "config" in t:
        cfg = settings(t["config"])
        asked = t.get("segment_request")
        have = cfg["segment_samples"] / cfg["samplerate"]
        if asked and abs(float(asked) - have) > 1e-3:
            from xopt.errors import UserError

            raise UserError(f"this export's graph takes {have:.2f} s segments, not --segment {asked}",
                            f"re-export with xopt export demucs --chunk {asked} --force, or drop --segment")
    else:
        rate = int(t.get("samplerate", 44100))
        cfg = settings({"segment_samples": int(float(t.get("segment_seconds", 7.8)) * rate), "samplerate": rate})
    batch = int(t.get("batch") or 1)
    return [segment_feed(cfg["segment_samples"], batch, seed + i, cfg["nfft"], cfg["spectral"], cfg["audio_channels"],
                         cfg["samplerate"]) for i in range(n)]
