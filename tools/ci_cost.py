"""What README's test command costs: run it, measure wall time and the peak RSS of its largest
process, and hold README's stated upper bounds to the measurement.

    python3 tools/ci_cost.py -- bash -c "$test_command"      # .ci/run does this

README states the bounds as `under <!-- measured: test_command_minutes -->60 min` and
`<!-- measured: test_command_peak_rss_gb -->20 GB`. The command's own exit status is passed
through; when it succeeded but a bound was exceeded the exit status is 4 and one line says which.
Peak RSS is wait4's ru_maxrss: the largest single process of the tree that was waited for (pytest's
workers and the subprocesses the tests start), not their sum.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
BOUND = re.compile(r"<!--\s*measured:\s*(test_command_\w+)\s*-->\s*([\d,]+(?:\.\d+)?)\s*(min|MB|GB)\b")
UNITS = {"min": 60.0, "MB": 2.0 ** 20, "GB": 2.0 ** 30}  # to seconds and bytes
EXCEEDED = 4


def bounds(text: str) -> dict[str, float]:
    """README's test-command bounds: {key: seconds or bytes}."""
    return {key: float(value.replace(",", "")) * UNITS[unit] for key, value, unit in BOUND.findall(text)}


def measure(cmd: list[str]) -> tuple[int, float, int]:
    """(exit status, wall seconds, peak RSS bytes of the largest process waited for)."""
    t0 = time.monotonic()
    # this process stays small: a forked child's ru_maxrss counts the parent's pages until exec
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.monotonic() - t0, usage.ru_maxrss * 1024


def judge(found: dict[str, float], seconds: float, rss: int) -> list[str]:
    """One line per bound the measurement exceeds."""
    bad = []
    if "test_command_minutes" in found and seconds > found["test_command_minutes"]:
        bad.append(f"took {seconds / 60:.1f} min, README says under {found['test_command_minutes'] / 60:g} min")
    if "test_command_peak_rss_gb" in found and rss > found["test_command_peak_rss_gb"]:
        bad.append(f"peaked at {rss / 2 ** 30:.1f} GB, README says under {found['test_command_peak_rss_gb'] / 2 ** 30:g} GB")
    return bad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--readme", type=Path, default=README)
    ap.add_argument("--json", type=Path, default=None, help="also write {exit, seconds, peak_rss_bytes} here")
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND...")
    args = ap.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        ap.error("give the command after --")
    found = bounds(args.readme.read_text(encoding="utf-8"))
    rc, seconds, rss = measure(cmd)
    if args.json is not None:
        args.json.write_text(json.dumps({"exit": rc, "seconds": seconds, "peak_rss_bytes": rss}), encoding="utf-8")
    print(f"ci_cost: exit {rc}, wall {seconds / 60:.1f} min, peak RSS {rss / 2 ** 30:.2f} GB (largest process)",
          file=sys.stderr, flush=True)
    if rc:
        return rc
    bad = judge(found, seconds, rss)
    for line in bad:
        print(f"ci_cost: the test command {line}: measure again and correct README.md", file=sys.stderr)
    return EXCEEDED if bad else 0


if __name__ == "__main__":
    sys.exit(main())
