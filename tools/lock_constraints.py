#!/usr/bin/env python3
"""Remake .ci/constraints.txt, CI's lock file, from a clean install.

CI installs with `-c .ci/constraints.txt` (and .ci/run exports PIP_CONSTRAINT to the same file, so
the OpenFold installer's own pip calls obey it too). Without a pin for every package a new
upstream release changes what CI tests, and CI goes red with no change in xopt. This script makes
the pins the way CI installs:

  1. a fresh venv in a temp dir, pip at a recorded version (--pip; default: the pip the current
     lock pins, so a refresh does not move pip unasked);
  2. `pip install -e ".[EXTRAS]"` (the extras of README's test command, or --extras) with only
     the seed constraint torch==2.13.* (the CPU build on this machine's disk, see SEED);
  3. the other steps of README's test command, as CI runs them: today `python3
     tools/install_openfold.py`, which may change what step 2 chose (it pins biopython==1.81).
     They are read from README rather than named here, so a moved installer needs no edit here;
  4. every installed distribution as `name==version`, sorted, except xopt itself and openfold
     (built from its sdist, noted as a comment); then a dry-run resolve from scratch against the
     new file must pick exactly those versions before the file replaces the old one.

Exit status 0 on success, 1 with the failing step otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / ".ci" / "constraints.txt"
README_MARKER = "<!-- test-command -->"
# The CPU build of torch lies on this machine's disk (pip's find-links); a plain `torch` resolves
# to the CUDA build, several GB of nvidia-* wheels, and the machine-wide pip constraint file caps
# torch at <=2.14.1 anyway. Both scripts seed with this pin and nothing else.
SEED = "torch==2.13.*"
# Not pinned: xopt is the editable checkout itself; openfold 0.0.1 is built from its sdist by the
# test command's OpenFold installer (--no-deps, --no-build-isolation), not resolved from an index.
UNPINNED = {"xopt": None, "openfold": "built from its sdist by the test command's OpenFold installer"}

# Printed as JSON by the venv's interpreter: every distribution it can import, first on sys.path wins.
PROBE = r'''
import importlib.metadata as md, json, sys
dists = {}
for d in md.distributions():
    dists.setdefault(d.metadata["Name"], d.version)
print(json.dumps({"python": sys.version.split()[0], "dists": dists}))
'''


class StepError(Exception):
    pass


# ---- pure functions (tests/tools/test_lock_tools.py covers these) ----

def canonical(name: str) -> str:
    """PEP 503 name: `Jinja2`, `typing_extensions` and `ml.collections` compare as pip does."""
    return re.sub(r"[-_.]+", "-", name).lower()


def public(version: str) -> str:
    """Drop a PEP 440 local tag: `==2.13.0` matches `2.13.0+cpu`, and pip prefers the local build."""
    return version.split("+", 1)[0]


def readme_test_command(text: str) -> str:
    """The line after README's marker, skipping a code fence -- the line .ci/run evaluates."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if README_MARKER in line:
            for cmd in lines[i + 1:]:
                if not cmd.startswith("```"):
                    return cmd.strip()
    raise ValueError(f"README has no command after {README_MARKER}")


def extras_of(command: str) -> str:
    """`test,trt-rtx,openfold,tf` from `pip install ... -e ".[test,trt-rtx,openfold,tf]"`."""
    m = re.search(r"""-e\s+["']?\.\[([^\]]+)\]""", command)
    if not m:
        raise ValueError(f"no -e \".[extras]\" in the test command: {command}")
    return ",".join(e.strip() for e in m.group(1).split(","))


def setup_steps(command: str) -> list[str]:
    """The test command's steps between the install and pytest (OpenFold's installer), as written."""
    steps = [s.strip() for s in command.split("&&")]
    return [s for s in steps if s and "pip install" not in s and "pytest" not in s]


def parse_constraints(text: str) -> dict[str, str]:
    """`name==version[; marker]` lines -> {canonical name: version}; comments, options, ranges skipped."""
    pins = {}
    for line in text.splitlines():
        line = re.sub(r"(^|\s)#.*", "", line).strip()  # pip's comment rule: '#' at start or after space
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;,]+)\s*(;.*)?", line)
        if m:
            pins[canonical(m.group(1))] = m.group(2)
    return pins


def render_constraints(dists: dict[str, str], *, extras: str, steps: list[str], pip: str, python: str,
                       date: str) -> str:
    """The lock file's text: a header saying how it was made, then one sorted pin per distribution."""
    head = [
        "# CI's lock: every distribution a clean install of xopt's test extras brings, at the version",
        "# it resolved. Made by tools/lock_constraints.py in a fresh venv: pip==" + pip + ", then",
        f'#   pip install -e ".[{extras}]" seeded only with {SEED}, then: {" && ".join(steps) or "nothing"}.',
        "# Refresh: python3 tools/lock_constraints.py    Drift against the newest releases: python3 tools/check_newest.py",
        f"# Made {date} with Python {python} ({platform.system()} {platform.machine()}).",
    ]
    body = {}
    for name, version in dists.items():
        key = canonical(name)
        if key in UNPINNED:
            if UNPINNED[key]:
                body[key] = f"# {key}=={version}  ({UNPINNED[key]}; not pinned here)"
            continue
        pin = f"{key}=={public(version)}"
        if public(version) != version:
            pin += f"  # installed as {version}; the pin matches it and pip prefers it"
        body[key] = pin
    return "\n".join(head + [body[k] for k in sorted(body)]) + "\n"


def diff_versions(locked: dict[str, str], newest: dict[str, str]) -> list[tuple[str, str, str]]:
    """(name, locked, newest) for each package whose version differs; '-' where one side lacks it."""
    a = {canonical(k): public(v) for k, v in locked.items()}
    b = {canonical(k): public(v) for k, v in newest.items() if canonical(k) not in UNPINNED}
    return [(k, a.get(k, "-"), b.get(k, "-")) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]


def format_table(rows: list[tuple[str, str, str]]) -> str:
    rows = [("package", "locked", "newest")] + rows
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


# ---- the venv ----

def say(msg: str) -> None:
    print(f"[{Path(sys.argv[0]).stem}] {msg}", flush=True)


def run(cmd: list[str], env: dict, **kw) -> subprocess.CompletedProcess:
    """Run with output on the terminal (pip's errors are the useful part); raise on failure."""
    say("$ " + " ".join(cmd))
    start = time.monotonic()
    proc = subprocess.run(cmd, env=env, **kw)
    took = time.monotonic() - start
    if proc.returncode != 0:
        raise StepError(f"exit {proc.returncode} after {took:.0f}s: {' '.join(cmd)}")
    say(f"  ok in {took:.0f}s")
    return proc


def build_venv(root: Path, python: str, pip: str | None, extras: str, steps: list[str]) -> tuple[str, dict]:
    """A fresh venv under root with xopt[extras], then the setup steps, as CI does; (python, env)."""
    seed = root / "seed-constraints.txt"
    seed.write_text(SEED + "\n")
    venv = root / "venv"
    run([python, "-m", "venv", str(venv)], os.environ.copy())
    # As .ci/run: PIP_CONSTRAINT reaches every pip call, the installer's included. It replaces
    # the machine-wide constraint file, whose only relevant line (torch<=2.14.1) the seed satisfies.
    env = dict(os.environ, VIRTUAL_ENV=str(venv), PIP_CONSTRAINT=str(seed),
               PATH=str(venv / "bin") + os.pathsep + os.environ.get("PATH", ""))
    env.pop("PYTHONHOME", None)
    py = str(venv / "bin" / "python")
    run([py, "-m", "pip", "install", "-q", *([f"pip=={pip}"] if pip else ["--upgrade", "pip"])], env)
    run([py, "-m", "pip", "install", "-q", "-e", f"{REPO}[{extras}]"], env)
    for step in steps:  # shell lines from README; the venv is first on PATH, so `python3` is its own
        run(["bash", "-c", step], env, cwd=REPO)
    return py, env


def installed(py: str, env: dict) -> dict:
    out = subprocess.run([py, "-c", PROBE], env=env, text=True, capture_output=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def verify(py: str, env: dict, lock: Path, extras: str, dists: dict[str, str]) -> None:
    """Resolve from scratch against the new lock; it must pick what the clean install has."""
    report = lock.parent / "resolve.json"
    run([py, "-m", "pip", "install", "-q", "--dry-run", "--ignore-installed", "--report", str(report),
         "-e", f"{REPO}[{extras}]"], dict(env, PIP_CONSTRAINT=str(lock)))
    picked = {canonical(i["metadata"]["name"]): i["metadata"]["version"]
              for i in json.loads(report.read_text())["install"]}
    have = {canonical(k): v for k, v in dists.items()}
    wrong = [f"{k} {v} (installed {have.get(k, 'none')})" for k, v in picked.items()
             if k not in UNPINNED and have.get(k) != v]
    if wrong:
        raise StepError("resolving against the new lock picks other versions: " + ", ".join(sorted(wrong)))
    say(f"a fresh resolve against the new lock picks the same {len(picked)} versions")


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(text)
    os.replace(tmp, path)


def readme_plan(extras: str | None) -> tuple[str, list[str]]:
    """(extras, setup steps) from README's test command; --extras overrides the extras."""
    command = readme_test_command((REPO / "README.md").read_text())
    return extras or extras_of(command), setup_steps(command)


def lock(args) -> str:
    """Build the venv, render and check the lock, write it to args.out; returns its text."""
    extras, steps = readme_plan(args.extras)
    pip = args.pip or (parse_constraints(args.out.read_text()).get("pip") if args.out.exists() else None)
    root = Path(tempfile.mkdtemp(prefix="xopt-lock-"))
    try:
        py, env = build_venv(root, args.python, None if pip == "latest" else pip, extras, steps)
        state = installed(py, env)
        dists = state["dists"]
        text = render_constraints(dists, extras=extras, steps=steps, pip=public(dists["pip"]),
                                  python=state["python"], date=datetime.now(timezone.utc).date().isoformat())
        candidate = root / "constraints.txt"
        candidate.write_text(text)
        verify(py, env, candidate, extras, dists)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(args.out, text)
        return text
    finally:
        if args.keep_venv:
            say(f"kept the venv: {root / 'venv'}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    ap.add_argument("--out", type=Path, default=LOCK, help="lock file to write (default: .ci/constraints.txt)")
    ap.add_argument("--python", default=sys.executable, help="interpreter to make the venv with (default: this one)")
    ap.add_argument("--extras", help="extras to install (default: those of README's test command)")
    ap.add_argument("--pip", help="pip version for the venv (default: the current lock's pin; 'latest': the newest)")
    ap.add_argument("--keep-venv", action="store_true", help="keep the temp dir with the venv and print its path")
    args = ap.parse_args(argv)
    start = time.monotonic()
    try:
        pins = parse_constraints(lock(args))
    except (StepError, subprocess.CalledProcessError, KeyError, ValueError) as exc:
        print(f"[lock_constraints] error: {exc}", file=sys.stderr)
        return 1
    say(f"wrote {args.out}: {len(pins)} pins (onnxruntime=={pins.get('onnxruntime', '?')}, "
        f"torch=={pins.get('torch', '?')}) in {time.monotonic() - start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
