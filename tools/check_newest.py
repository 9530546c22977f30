#!/usr/bin/env python3
"""Check xopt against the newest releases of everything it installs: what moved, and is it green.

.ci/constraints.txt freezes what CI tests; this shows what a user installing today gets instead.
In a fresh temp venv it installs the newest pip, then `pip install -e ".[EXTRAS]"` (README's test
command's extras, or --extras) with no constraint but torch==2.13.*, then the test command's
other steps (the OpenFold installer), then runs
`python -m pytest -q -x --no-header -p no:cacheprovider [PYTEST_ARGS...]` in the checkout.

torch stays at the CPU build on this machine's disk (torch==2.13.*): the newest torch on the
index is the CUDA build, several GB of nvidia-* wheels for a machine without a GPU, and the
machine-wide pip constraint file allows only torch<=2.14.1 anyway.

It prints the packages whose version differs from .ci/constraints.txt (name, locked, newest) and
pytest's summary line. Exit status: pytest's (0: green against the newest releases); with
--no-tests, 0 after printing the table; 1 when the install fails.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lock_constraints as lock  # noqa: E402  (the venv recipe and the version helpers)

PYTEST = ["-m", "pytest", "-q", "-x", "--no-header", "-p", "no:cacheprovider"]
SUMMARY = re.compile(r"\b(\d+ (passed|failed|errors?|skipped|deselected|xfailed|xpassed)|no tests ran)\b")


def summary_line(output: str) -> str:
    """pytest's closing line (`3 failed, 10 passed in 4.2s`), or '' if it printed none."""
    for line in reversed(output.splitlines()):
        if SUMMARY.search(line):
            return line.strip("= \t")
    return ""


def run_pytest(py: str, env: dict, extra: list[str]) -> tuple[int, str]:
    """Stream pytest's output to the terminal and keep it for the summary line."""
    cmd = [py, *PYTEST, *extra]
    lock.say("$ " + " ".join(cmd))
    proc = subprocess.Popen(cmd, env=env, cwd=lock.REPO, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    kept = []
    for line in proc.stdout:
        sys.stdout.write(line)
        kept.append(line)
    return proc.wait(), "".join(kept)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                 epilog="Arguments after the options go to pytest, e.g. -- -k parity")
    ap.add_argument("--lock", type=Path, default=lock.LOCK, help="lock file to compare with")
    ap.add_argument("--python", default=sys.executable, help="interpreter to make the venv with (default: this one)")
    ap.add_argument("--extras", help="extras to install (default: those of README's test command)")
    ap.add_argument("--no-tests", action="store_true", help="only install and print the version table")
    ap.add_argument("--keep-venv", action="store_true", help="keep the temp dir with the venv and print its path")
    args, pytest_args = ap.parse_known_args(argv)
    pytest_args = [a for a in pytest_args if a != "--"]

    locked = lock.parse_constraints(args.lock.read_text()) if args.lock.exists() else {}
    root = Path(tempfile.mkdtemp(prefix="xopt-newest-"))
    try:
        extras, steps = lock.readme_plan(args.extras)
        py, env = lock.build_venv(root, args.python, None, extras, steps)
        newest = lock.installed(py, env)["dists"]
        code, output = (0, "") if args.no_tests else run_pytest(py, env, pytest_args)
    except (lock.StepError, subprocess.CalledProcessError, ValueError) as exc:
        print(f"[check_newest] error: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep_venv:
            lock.say(f"kept the venv: {root / 'venv'}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    rows = lock.diff_versions(locked, newest)
    print(f"\n{len(rows)} package(s) differ from {args.lock}:" if rows else f"\nall versions match {args.lock}")
    if rows:
        print(lock.format_table(rows))
    if not args.no_tests:
        print(f"pytest: {summary_line(output) or 'no summary line'} (exit {code})")
    return code


if __name__ == "__main__":
    sys.exit(main())
