"""Progress display for long steps: a spinner with elapsed time on a terminal, plain lines otherwise."""
from __future__ import annotations

import contextlib
import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
_QUIET = False


def set_quiet(quiet: bool) -> None:
    global _QUIET
    _QUIET = quiet


def _console():
    from rich.console import Console

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
    elapsed = time.perf_counter() - t0
    note = f" ({facts['note']})" if facts.get("note") else ""
    from rich.markup import escape

    console.print(f"[green]✓[/green] {escape(message)} [dim]{elapsed:.1f} s[/dim]{escape(note)}")


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterable[T]:
    if _QUIET or not sys.stderr.isatty():
        return items
    from rich.progress import track as rich_track

    return rich_track(items, description=description, total=total, console=_console(), transient=True)


def info(message: str) -> None:
    if not _QUIET:
        from rich.markup import escape

        _console().print(escape(message))
