"""Keep third-party chatter (onnxconverter-common's truncation warnings, ONNX Runtime's
quantizer logging, exporter deprecations) out of xopt's own terminal lines: it goes to a log
file kept beside the report, and the command prints one line saying how much there was."""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Iterator, TextIO


class Captured:
    def __init__(self, stream: TextIO):
        self.stream = stream
        self.count = 0

    def write(self, text: str) -> None:
        self.count += 1
        self.stream.write(text if text.endswith("\n") else text + "\n")
        self.stream.flush()


@contextlib.contextmanager
def quiet_third_party(log: Path | None = None) -> Iterator[Captured]:
    """Redirect Python warnings, logging and, with `log`, everything written to file descriptor 2
    (torch's own log handlers, ONNX Runtime's C++ messages) to `log`; xopt's progress lines keep
    the real stderr. Without `log` (a worker, whose stderr already is the log) only Python's
    warnings and logging are routed."""
    from xopt import progress

    fh = open(log, "a", encoding="utf-8") if log else None
    saved_fd = None
    if fh is not None:
        sys.stderr.flush()
        saved_fd = os.dup(2)
        os.dup2(fh.fileno(), 2)
        progress.set_stream(os.fdopen(os.dup(saved_fd), "w", buffering=1))
    sink = Captured(fh or sys.stderr)
    handler = logging.StreamHandler(_Adapter(sink))
    handler.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers = [handler]
    root.setLevel(logging.WARNING)
    if importlib.util.find_spec("onnxruntime") is not None and "onnxruntime" in sys.modules:
        sys.modules["onnxruntime"].set_default_logger_severity(3)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: sink.write(
                warnings.formatwarning(message, category, filename, lineno, line))
            yield sink
    finally:
        root.handlers, root.level = saved_handlers, saved_level
        if saved_fd is not None:
            sys.stderr.flush()
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
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


def log_summary(log: Path) -> str | None:
    """'N lines of third-party output in PATH' or None when the log is empty."""
    if not log.exists():
        return None
    body = [ln for ln in log.read_text(encoding="utf-8", errors="replace").splitlines()
            if ln.strip() and not ln.startswith("=====")]
    if not body:
        return None
    return f"{len(body)} lines of third-party warnings and logging kept in {log}"


def fresh_log(name: str) -> Path:
    """An empty log in xopt's cache (this run's output only): it outlives the command, so an
    error can name it, and artifact directories hold artifacts only."""
    from xopt.cache import cache_root

    log = cache_root() / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("", encoding="utf-8")
    return log


@contextlib.contextmanager
def quiet_export(model: str) -> Iterator[Path]:
    """An export's third-party output into the export log of `model`, whichever command exports."""
    log = fresh_log(f"export-{model}")
    with quiet_third_party(log):
        yield log
