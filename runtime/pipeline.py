"""The contract of a model's numpy pipeline: what an app embeds and `xopt run` drives.

A pipeline wraps a loaded `Session` with the model's own pre- and post-processing. It
imports no torch, so an app can ship ONNX Runtime or TensorRT alone.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

from xopt.runtime.backends.base import Session


class Pipeline:
    #: file kinds `process_file` accepts, for `xopt run --help`
    input_kinds: tuple[str, ...] = ()
    #: at most this many end-to-end runs per profiled variant (None: one per timed frame); a
    #: pipeline whose raw input is a whole track or protein caps it
    e2e_runs: int | None = None
    #: what `process_file` counts through its `progress` callback ("frames", "segments"), for
    #: the progress line of `xopt run`
    progress_unit: str = ""

    def __init__(self, session: Session, config: dict | None = None, variant: dict | None = None):
        """`config`: the export's config (and weights provenance); `variant`: the manifest's entry
        of the variant `session` runs (precision, export_config, settings), when it came from one."""
        self.session = session
        self.config = dict(config or {})
        self.variant = dict(variant or {})

    def __call__(self, raw: Any) -> Any:
        """End to end on one raw input (an image, a track, a sequence)."""
        raise NotImplementedError

    def raw_samples(self, n: int, targets: dict, seed: int = 0) -> list[Any]:
        """`n` raw inputs at the device profile's target size, for end-to-end latency."""
        raise NotImplementedError

    def process_file(self, src: Path, dst: Path, force: bool = False,
                     progress: Callable[[Iterable], Iterable] | None = None) -> list[Path]:
        """Read `src`, write results at `dst` atomically (refusing to overwrite without
        `force`); return the paths written."""
        raise NotImplementedError

    def outputs_for(self, src: Path, dst: Path) -> list[Path] | None:
        """The files `process_file(src, dst)` would write, known before any work; None where
        they are not (a frame sequence). `run_file` replaces them on a re-run when xopt wrote them."""
        return None

    def batch_target(self, src: Path, out_dir: Path) -> Path:
        """The `dst` that `process_file` gets for `src` when many files go to `out_dir` (`xopt run
        MODEL DIR -o OUT`): `out_dir` itself, for pipelines that name their outputs after `src`."""
        return out_dir

    def close(self) -> None:
        self.session.close()


def run_file(pipe: Pipeline, src: Path, dst: Path, force: bool = False,
             progress: Callable[[Iterable], Iterable] | None = None) -> list[Path]:
    """`pipe.process_file` with xopt's rule for outputs that exist: a re-run replaces the files
    xopt wrote itself (their sha256 recorded in xopt.written), and keeps a file it did not
    write, or one edited since, unless `force` (OutputExistsError, before any work)."""
    from xopt.written import record, refuse_foreign

    planned = pipe.outputs_for(Path(src), Path(dst))
    if planned and not force:
        refuse_foreign(planned, force)
        force = True  # whatever exists there is xopt's own output: replace it
    written = pipe.process_file(Path(src), Path(dst), force=force, progress=progress)
    record(written)
    return written
