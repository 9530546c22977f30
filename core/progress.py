"""Progress for every step that can take more than a few seconds, in one style.

On a terminal (rich): a spinner with the step's message and its elapsed time, or, for a step
that knows counts, a bar with done/total, elapsed and time left. Piped (CI, `| tee`, a file):
no animation, plain lines instead, so a long step is never silent:

    … modnet fp32: 20 frames on ort-cpu                        once it has run START_S (1 s)
    … modnet fp32: 20 frames on ort-cpu 30 s (7/20 frames, about 55 s left)   every HEARTBEAT_S
    ✓ modnet fp32: 20 frames on ort-cpu 1 min 21 s (20 frames)                when it ends

A step quicker than START_S prints only its ✓ line; one that raises after its start line was
printed ends with ✗ instead (a quick refusal stays the error's one line). Every call is a no-op
under `xopt -q`.

The API:
- `step(message)` yields a dict; set `["note"]` for the ✓ line. Work without counts.
- `bar(message)` yields `update({"what", "done", "total"})`: counts the work reports as it
  goes (a worker process's progress messages, a fit's settings).
- `counted(message, total, what)` yields a `Counter`: `advance(n=1)`, `set(done, total)`,
  `detail` (text shown after the message, e.g. "trial 3: 10 groups in FP32") and `note` (for
  the ✓ line). For a loop of known length, e.g. a gated precision search: the terminal shows
  "3/20 trials, elapsed, left", the piped heartbeat "… MESSAGE 2 min 10 s (3/20 trials,
  about 12 min left)". The estimate is elapsed / done × (total − done); `set(total=...)`
  revises the total as the loop learns it.
- `track(items, description, total, what)` counts items as the caller consumes them.
- `info(message)` prints one line.
`XOPT_PROGRESS_START_S` and `XOPT_PROGRESS_HEARTBEAT_S` override the two intervals (tests).
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
_QUIET = False
_STREAM = None  # where progress goes while stderr itself is redirected to a log (None: sys.stderr)
_LOCK = threading.RLock()  # the heartbeat threads and the main thread print whole lines
START_S = 1.0
HEARTBEAT_S = 30.0


def set_quiet(quiet: bool) -> None:
    global _QUIET
    _QUIET = quiet


def set_stream(stream) -> None:
    global _STREAM
    if _STREAM is not None and stream is None:
        _STREAM.close()
    _STREAM = stream


def stream():
    """Where xopt's own progress and notes go (the real stderr, even while a log holds fd 2)."""
    return _STREAM if _STREAM is not None else sys.stderr


def _console():
    from rich.console import Console

    if _STREAM is not None:
        return Console(file=_STREAM, highlight=False)
    return Console(stderr=True, highlight=False)


def _interval(name: str, default: float) -> float:
    try:
        return max(0.0, float(os.environ.get(name, default)))
    except ValueError:
        return default


def duration(seconds: float) -> str:
    """12.3 s, 6 min 05 s, 1 h 02 min: elapsed times and estimates in the progress lines."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        m, s = divmod(int(round(seconds)), 60)
        return f"{m} min {s:02d} s"
    h, m = divmod(int(round(seconds / 60)), 60)
    return f"{h} h {m:02d} min"


class Counter:
    """A running step's counts (see the module docstring); also the `update` callable of `bar`."""

    def __init__(self, message: str, total: int | None = None, what: str = ""):
        self.message, self.total, self.what = message, total, what
        self.done = 0
        self.detail = ""
        self.note: str | None = None
        self.t0 = self.t_phase = time.perf_counter()
        self._refresh = None  # set while a terminal display shows this step

    def set(self, done: int | None = None, total: int | None = None, what: str | None = None,
            detail: str | None = None) -> None:
        if (what is not None and what != self.what) or (done is not None and done < self.done):
            self.t_phase = time.perf_counter()  # a new phase (timed frames, then end-to-end ones): a new pace
        if done is not None:
            self.done = done
        if total is not None:
            self.total = total
        if what is not None:
            self.what = what
        if detail is not None:
            self.detail = detail
        if self._refresh is not None:
            self._refresh()

    def advance(self, n: int = 1) -> None:
        self.set(done=self.done + n)

    def __call__(self, p: dict) -> None:  # bar()'s update({"what", "done", "total"})
        self.set(p.get("done"), p.get("total"), p.get("what"))

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float | None:
        """Seconds still to go, from the pace so far; None before the first item or without a total."""
        if not self.total or self.done <= 0:
            return None
        return (time.perf_counter() - self.t_phase) / self.done * max(0, self.total - self.done)

    def label(self) -> str:
        return f"{self.message}: {self.detail}" if self.detail else self.message

    def counts(self) -> str:
        what = f" {self.what}" if self.what else ""
        if self.total:
            left = self.left() if self.done < self.total else None  # all done: the step is finishing up
            return f"{self.done}/{self.total}{what}" + (f", about {duration(left)} left" if left is not None else "")
        return f"{self.done}{what}" if self.done else ""


def _print(console, text: str) -> None:
    with _LOCK:
        console.print(text, highlight=False, soft_wrap=True)


class _Heartbeat(threading.Thread):
    """Piped output: the start line after START_S, then a line every HEARTBEAT_S."""

    def __init__(self, counter: Counter, console):
        super().__init__(daemon=True, name="xopt-progress")
        self.counter, self.console = counter, console
        self.stopped = threading.Event()
        self.shown = False  # the start line is out: the step must end with ✓ or ✗

    def run(self) -> None:
        from rich.markup import escape

        if self.stopped.wait(_interval("XOPT_PROGRESS_START_S", START_S)):
            return
        self.shown = True
        c = self.counter
        _print(self.console, f"… {escape(c.label())}" + (f" [dim]({escape(c.counts())})[/dim]" if c.total else ""))
        every = _interval("XOPT_PROGRESS_HEARTBEAT_S", HEARTBEAT_S) or HEARTBEAT_S
        while not self.stopped.wait(every):
            counts = c.counts()
            _print(self.console, f"… {escape(c.label())} [dim]{duration(c.elapsed())}[/dim]"
                   + (f" [dim]({escape(counts)})[/dim]" if counts else ""))

    def stop(self) -> None:
        self.stopped.set()
        self.join()


def _terminal_display(console, counter: Counter, counts: bool):
    from rich.markup import escape
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    columns = [SpinnerColumn(), TextColumn("{task.description}")]
    if counts:
        columns += [BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn()]
    else:
        columns += [TimeElapsedColumn()]
    live = Progress(*columns, console=console, transient=True)
    task = live.add_task(escape(counter.label()), total=counter.total)

    def refresh() -> None:
        live.update(task, description=escape(counter.label()), total=counter.total, completed=counter.done)

    return live, refresh


@contextlib.contextmanager
def _shown(counter: Counter, counts: bool) -> Iterator[Counter]:
    """Show `counter` while the block runs (terminal or piped); afterwards its ✓ (or ✗) line."""
    if _QUIET:
        yield counter
        return
    console = _console()
    ok, beat = False, None
    try:
        if console.is_terminal:
            live, counter._refresh = _terminal_display(console, counter, counts)
            with live:
                yield counter
        else:
            beat = _Heartbeat(counter, console)
            beat.start()
            try:
                yield counter
            finally:
                beat.stop()
        ok = True
    except GeneratorExit:  # a tracked iterable closed early: ended if every item was through, else failed
        ok = counter.total is None or counter.done >= counter.total
        raise
    finally:
        counter._refresh = None
        # a failed step says ✗ only where its start line is out (piped, after START_S): a quick
        # refusal stays the error's one line
        if ok or (beat is not None and beat.shown):
            _done(console, counter, ok)


def _done(console, counter: Counter, ok: bool) -> None:
    """The line a finished step leaves: ✓ message, elapsed time, and its note."""
    from rich.markup import escape

    note = counter.note
    if note is None and counter.total:
        note = f"{counter.done}/{counter.total} {counter.what}".strip() if counter.done != counter.total \
            else f"{counter.total} {counter.what}".strip()
    extra = f" ({note})" if note else ""
    mark = "[green]✓[/green]" if ok else "[red]✗[/red]"
    _print(console, f"{mark} {escape(counter.message)} [dim]{duration(counter.elapsed())}[/dim]{escape(extra)}")


@contextlib.contextmanager
def step(message: str) -> Iterator[dict]:
    """Show `message` while the block runs; afterwards print it with the elapsed time and the
    note the block set in the yielded dict (`facts["note"]`)."""
    facts: dict = {}
    counter = Counter(message)
    with _shown(counter, counts=False):
        try:
            yield facts
        finally:
            counter.note = facts.get("note")


@contextlib.contextmanager
def bar(message: str) -> Iterator[Counter]:
    """A step whose work reports counts (frames, segments, samples). Yields the callback
    `update({"what", "done", "total"})` (a Counter: `advance` and `set` work too)."""
    with _shown(Counter(message), counts=True) as counter:
        yield counter


@contextlib.contextmanager
def counted(message: str, total: int | None, what: str = "") -> Iterator[Counter]:
    """A loop of `total` items (trials, settings, files): see the module docstring."""
    with _shown(Counter(message, total, what), counts=True) as counter:
        yield counter


def track(items: Iterable[T], description: str, total: int | None = None, what: str = "") -> Iterable[T]:
    """`items`, counted as the caller consumes them, with the progress of `counted`."""
    if _QUIET:
        return items
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    return _tracked(items, description, total, what)


def _tracked(items: Iterable[T], description: str, total: int | None, what: str) -> Iterator[T]:
    with counted(description, total, what) as c:
        for item in items:
            yield item
            c.advance()


def info(message: str) -> None:
    if not _QUIET:
        from rich.markup import escape

        _print(_console(), escape(message))
