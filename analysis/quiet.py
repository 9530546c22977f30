"""Keep third-party output off the terminal: each run writes it to a log of its own, beside
its output, and names the log in one line at the end.

What goes to the log: everything written to file descriptors 1 and 2 while the run works
(torch.onnx's `[torch.onnx] ...` prints, onnxscript, ONNX Runtime's C++ messages, TensorFlow,
Ray, child processes), Python warnings and logging (ONNX Runtime's quantizer, onnxconverter-
common's truncation warnings). xopt's own progress keeps the real stderr (`progress.stream`).

Where (`log_path`, the one place that decides it):

    FOLDER/logs/COMMAND-YYYYmmdd-HHMMSS-PID.log

FOLDER is the command's output folder: the artifacts for `xopt export` (and for `xopt bench`
without --out, and `xopt run` on one file, whose output is not a folder; a read-only export's
run logs to xopt's cache folder instead), the report folder
for `profile`, `compare`, `eval` and `fit`, the results folder for `sweep` and for `run` on
many files. An export that `profile`, `bench`, `eval` or `run` starts for a missing variant
writes into that command's log: one log per run. The folder is created when the log opens,
which commands do after checking their arguments and that the folder is writable.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Iterator, TextIO

HEADER = "xopt-log: "  # xopt's own lines in a log; everything else is third-party output
_ACTIVE: list[Path | None] = []  # the logs of the quiet blocks now open (nested blocks reuse the outer one)


def log_path(folder: str | os.PathLike, command: str) -> Path:
    """This run's log: FOLDER/logs/COMMAND-YYYYmmdd-HHMMSS-PID.log (see the module docstring);
    a second run in the same process and second (a test, a library caller) gets -2, -3, ..."""
    stem = f"{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    path, n = Path(folder) / "logs" / f"{stem}.log", 1
    while path.exists():
        n += 1
        path = path.with_name(f"{stem}-{n}.log")
    return path


def writable_folder(folder: str | os.PathLike) -> Path:
    """`folder` when a log can be written there (it, or the first existing folder above it, is
    writable), else xopt's cache: `xopt run` on a read-only export still keeps its log."""
    folder = Path(folder)
    here = next((d for d in (folder, *folder.parents) if d.exists()), Path("."))
    if here.is_dir() and os.access(here, os.W_OK | os.X_OK):
        return folder
    from xopt.cache import cache_root

    return cache_root()


def open_log(path: Path, command_line: str = "") -> Path:
    """Create `path` with a header naming the run; a folder that cannot be written is a UserError."""
    from xopt import __version__
    from xopt.atomic import ensure_parent, write_error

    created = [d for d in (path.parent, *path.parent.parents) if not d.exists()]
    try:
        ensure_parent(path)
        with open(path, "x", encoding="utf-8") as fh:
            fh.write(f"{HEADER}xopt {__version__}, pid {os.getpid()}, {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")
            if command_line:
                fh.write(f"{HEADER}{command_line}\n")
    except OSError as exc:
        _remove(path, created)  # a disk too full for the header: leave nothing behind
        err = write_error(exc, path)
        if err is exc:
            raise
        raise err from exc
    return path


class Captured:
    def __init__(self, stream: TextIO):
        self.stream = stream
        self.count = 0

    def write(self, text: str) -> None:
        self.count += 1
        self.stream.write(text if text.endswith("\n") else text + "\n")
        self.stream.flush()


def _flush_c_stdio() -> None:
    """Flush the C library's stdio buffers (a library's printf), so they land in the log."""
    import ctypes

    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)


def _flush_python() -> None:
    for s in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            s.flush()


@contextlib.contextmanager
def quiet_third_party(log: Path | None = None) -> Iterator[Captured]:
    """Redirect Python warnings, logging and, with `log`, everything written to file descriptors
    1 and 2 to `log`; xopt's progress lines keep the real stderr. Without `log` (a worker, whose
    stderr already is the log) only Python's warnings and logging are routed. A block inside
    another one writes to the outer block's log."""
    from xopt import progress

    if _ACTIVE and _ACTIVE[-1] is not None:  # file descriptors 1 and 2 already go to the outer log
        yield Captured(sys.stderr)
        return
    fh = open(log, "a", encoding="utf-8") if log else None
    saved: dict[int, int] = {}
    if fh is not None:
        _flush_python()
        _flush_c_stdio()
        saved = {fd: os.dup(fd) for fd in (1, 2)}
        for fd in (1, 2):
            os.dup2(fh.fileno(), fd)
        progress.set_stream(os.fdopen(os.dup(saved[2]), "w", buffering=1, encoding="utf-8", errors="replace"))
    sink = Captured(fh or sys.stderr)
    handler = logging.StreamHandler(_Adapter(sink))
    handler.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers = [handler]
    root.setLevel(logging.WARNING)
    if "onnxruntime" in sys.modules:
        sys.modules["onnxruntime"].set_default_logger_severity(3)
    _ACTIVE.append(log)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: sink.write(
                warnings.formatwarning(message, category, filename, lineno, line))
            yield sink
    finally:
        _ACTIVE.pop()
        root.handlers, root.level = saved_handlers, saved_level
        if saved:
            _flush_python()
            _flush_c_stdio()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            progress.set_stream(None)
        if fh:
            fh.close()


class _Adapter:
    """A file-like object for logging.StreamHandler that counts each record once."""

    def __init__(self, sink: Captured):
        self.sink = sink

    def write(self, text: str) -> None:
        if text.strip():
            self.sink.write(text)

    def flush(self) -> None:
        pass


def third_party_lines(log: Path) -> int:
    """Lines in `log` that other libraries wrote (not xopt's header or job separators)."""
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return 0
    return sum(1 for ln in text.splitlines() if ln.strip() and not ln.startswith((HEADER, "=====")))


def log_line(log: Path) -> str:
    """The one line a run ends with: where its log is and how much other libraries wrote there."""
    n = third_party_lines(log)
    what = f"{n} line{'s' if n != 1 else ''} of third-party output" if n else "no third-party output"
    return f"log: {log} ({what})"


def announce(log: Path | None) -> None:
    """Print `log_line` on stderr (also under -q: it is where the run's details are)."""
    if log is None:
        return
    from rich.console import Console

    Console(stderr=True, highlight=False).print(log_line(log), style="dim", markup=False, soft_wrap=True)


@contextlib.contextmanager
def run_log(folder: str | os.PathLike, command: str, command_line: str = "", flag: str = "--out") -> Iterator[Path]:
    """This run's log (log_path in `folder`) holding all third-party output of the block. The
    caller prints `announce(log)` as its last line; a crash (a bug, not a UserError) names the
    log before its traceback. `flag`: the option that chose `folder`, for the error when it is
    a file."""
    from xopt.errors import UserError

    if _ACTIVE and _ACTIVE[-1] is not None:  # an export inside a profile: the profile's log
        yield _ACTIVE[-1]
        return
    blocking = next((d for d in (Path(folder), *Path(folder).parents) if d.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise UserError(f"{blocking} is a file", f"pass a directory to {flag}")
    path = log_path(folder, command)
    created = [d for d in (path.parent, *path.parent.parents) if not d.exists()]
    log = open_log(path, command_line)
    try:
        with quiet_third_party(log):
            yield log
    except (UserError, KeyboardInterrupt):
        if not third_party_lines(log):  # refused before any work: leave the folder as it was
            _remove(log, created)
        raise
    except Exception:
        announce(log)
        raise


def _remove(log: Path, created: list[Path]) -> None:
    with contextlib.suppress(OSError):
        log.unlink()
    for d in created:  # deepest first; a folder something else wrote into stays
        with contextlib.suppress(OSError):
            d.rmdir()
