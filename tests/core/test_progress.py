"""Progress when piped: a step over a second shows a start line within 2 s, a long one a
heartbeat with elapsed time, counts and an estimate, and every step ends with ✓ (or ✗)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

from xopt import progress

SCRIPT = textwrap.dedent("""
    import time
    from xopt import progress
    with progress.step("quick"):
        pass
    with progress.step("slow") as facts:
        time.sleep(1.6)
        facts["note"] = "done"
    with progress.counted("search", 4, "trials") as c:
        for _ in range(4):
            time.sleep(0.5)
            c.advance()
    try:
        with progress.step("broken"):
            time.sleep(1.3)
            raise ValueError("x")
    except ValueError:
        pass
""")


def _timed_lines(env: dict) -> list[tuple[float, str]]:
    """Each stderr line of SCRIPT (piped, as in CI) with the seconds since the child started."""
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True, env={**os.environ, **env})
    t0, lines = time.monotonic(), []
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append((time.monotonic() - t0, line.rstrip("\n")))
    assert proc.wait() == 0, lines
    return lines


def test_piped_steps_show_a_start_line_a_heartbeat_and_an_end_line():
    lines = _timed_lines({"XOPT_PROGRESS_HEARTBEAT_S": "0.4", "COLUMNS": "200"})
    text = [t for _, t in lines]
    assert text[0].startswith("✓ quick ")  # under a second: its end line only
    assert not any(t.startswith("… quick") for t in text)
    start = next(i for i, t in enumerate(text) if t == "… slow")
    end = next(i for i, t in enumerate(text) if t.startswith("✓ slow"))
    assert start < end and text[end].endswith("(done)")
    # the start line came about a second into the step, well within 2 s of the quick step's end
    assert lines[start][0] - lines[0][0] < 2.0 and lines[end][0] - lines[start][0] > 0.3
    beats = [t for t in text if t.startswith("… search ") and "trials, about" in t]
    assert beats, text  # heartbeats: elapsed, done/total and the estimate
    assert any(t.startswith("✓ search ") and t.endswith("(4 trials)") for t in text)
    assert any(t.startswith("✗ broken ") for t in text) and not any(t.startswith("✓ broken") for t in text)


def test_the_estimate_is_the_pace_so_far_times_what_is_left(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    c = progress.Counter("search", total=20, what="trials")
    assert c.left() is None and c.counts() == "0/20 trials"  # no pace before the first trial
    now[0] += 30.0
    c.advance(3)
    assert c.left() == 30.0 / 3 * 17
    assert c.counts() == "3/20 trials, about 2 min 50 s left"
    c.set(total=6)  # the loop learnt it has fewer trials
    assert c.counts() == "3/6 trials, about 30.0 s left"


def test_durations_read_as_people_write_them():
    assert progress.duration(9.46) == "9.5 s"
    assert progress.duration(375) == "6 min 15 s"
    assert progress.duration(3 * 3600 + 125) == "3 h 02 min"


def test_quiet_prints_nothing(capfd):
    progress.set_quiet(True)
    try:
        with progress.step("anything"):
            pass
        list(progress.track(range(3), "items"))
    finally:
        progress.set_quiet(False)
    assert capfd.readouterr().err == ""
