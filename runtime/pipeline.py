"""The contract of a model's numpy pipeline: what an app embeds and `xopt run` drives.

A pipeline wraps a loaded `Session` with the model's own pre- and post-processing. It
imports no torch, so an app can ship ONNX Runtime or TensorRT alone.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable, Iterable

from xopt.errors import UserError
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

    @property
    def notes(self) -> list[dict]:
        """What `process_file` had to say about its inputs (see `note`); the caller clears it
        between files. (A property: a plug-in pipeline's own __init__ need not set it up.)"""
        return self.__dict__.setdefault("_notes", [])

    @classmethod
    def check_input(cls, path: Path) -> dict:
        """Facts about the file `process_file` would read, from its header only (no decoding, no
        session): raise UserError for a file this pipeline cannot take. `xopt run` calls it before
        it exports or loads anything. The facts may carry "notes" (e.g. a downmix that will happen),
        said before the work starts. The caller has checked that `path` is a readable file."""
        return {}

    def note(self, text: str, failed: bool = False) -> None:
        """Record something the user must hear about the input just processed. `failed`: the run
        finished but did not get everything (e.g. the file ends early): `xopt run` exits 3."""
        self.notes.append({"text": text, "failed": bool(failed)})

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

    @classmethod
    def default_output(cls, src: Path, root: Path) -> Path:
        """The `dst` of `xopt run MODEL FILE` without -o: `root` (outputs/MODEL) itself, for
        pipelines that name their outputs after `src` inside a folder."""
        return root

    def batch_target(self, src: Path, out_dir: Path) -> Path:
        """The `dst` that `process_file` gets for `src` when many files go to `out_dir` (`xopt run
        MODEL DIR -o OUT`): `out_dir` itself, for pipelines that name their outputs after `src`."""
        return out_dir

    def close(self) -> None:
        self.session.close()


def pipeline_class(spec) -> type[Pipeline] | None:
    """The Pipeline subclass a spec names ("module:Class"), imported on first use; None if it has none."""
    if not spec.pipeline:
        return None
    module_name, _, cls_name = spec.pipeline.partition(":")
    return getattr(importlib.import_module(module_name), cls_name)


def check_readable(path: Path) -> None:
    """An input that exists, is a file and can be opened: UserError otherwise."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist", "pass an existing input file")
    if path.is_dir():
        raise UserError(f"{path} is a directory", "pass a file")
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise UserError(f"cannot read {path} ({exc.strerror or exc})", "check the file and its permissions") from exc


def check_input(spec, path: str | Path) -> dict:
    """What `xopt run` checks of an input before any export or session: the file is there and
    readable, and the model's pipeline (its `check_input` hook) can take it. Returns its facts."""
    path = Path(path)
    check_readable(path)
    cls = pipeline_class(spec)
    return dict(cls.check_input(path) or {}) if cls is not None else {}
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
