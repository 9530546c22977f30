"""Progress display for long steps: a spinner with elapsed time on a terminal, plain lines otherwise."""
from __future__ import annotations

import contextlib
import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
_QUIET = False
_STREAM = None  # where progress goes while stderr itself is redirected to a log (None: sys.stderr)


def set_quiet(quiet: bool) -> None:
    global _QUIET
    _QUIET = quiet


def set_stream(stream) -> None:
    global _STREAM
    if _STREAM is not None and stream is None:
        _STREAM.close()
    _STREAM = stream


def _console():
    from rich.console import Console

    if _STREAM is not None:
        return Console(file=_STREAM, highlight=False)
    return Console(stderr=True, highlight=False)


@contextlib.contextmanager
def step(message: str) -> Iterator[dict]:
    """Show `message` while the block runs; afterwards print it with the elapsed time."""
    facts: dict = {}
    t0 = time.perf_counter()
    if _QUIET:
        yield facts
        return
    console = _console()
    if console.is_terminal:
        from rich.markup import escape

        with console.status(escape(message)):
            yield facts
    else:
        yield facts
    _done(console, message, t0, facts.get("note"))


def _done(console, message: str, t0: float, note: str | None) -> None:
    """The line a finished step leaves: ✓ message, elapsed seconds, and its note."""
    from rich.markup import escape

    extra = f" ({note})" if note else ""
    console.print(f"[green]✓[/green] {escape(message)} [dim]{time.perf_counter() - t0:.1f} s[/dim]{escape(extra)}")


@contextlib.contextmanager
def bar(message: str) -> Iterator:
    """A step whose work reports counts (frames, segments, samples): on a terminal a bar with
    done/total, elapsed and time left; afterwards the same ✓ line as `step`. Yields the
    callback `update({"what", "done", "total"})`."""
    t0 = time.perf_counter()
    seen: dict = {}

    def remember(p: dict) -> None:
        seen.update(p)

    if _QUIET:
        yield remember
        return
    console = _console()
    from rich.markup import escape

    if console.is_terminal:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(), console=console,
                      transient=True) as live:
            task = live.add_task(escape(message), total=None)

            def update(p: dict) -> None:
                remember(p)
                live.update(task, description=escape(f"{message}: {p.get('what', '')}"),
                            total=p.get("total"), completed=p.get("done", 0))

            yield update
    else:
        yield remember
    _done(console, message, t0, f"{seen['total']} {seen['what']}" if seen.get("total") else None)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterable[T]:
    if _QUIET or not (_STREAM or sys.stderr).isatty():
        return items
    from rich.progress import track as rich_track

    return rich_track(items, description=description, total=total, console=_console(), transient=True)


def info(message: str) -> None:
    if not _QUIET:
        from rich.markup import escape

        _console().print(escape(message))
