"""What an install costs, measured the way a user meets it: a fresh virtual environment, shell
steps run in it, and afterwards the wall time, the peak memory of each step's process tree, and
the site-packages size per distribution (from each distribution's RECORD, byte counts as
`du --apparent-size` would give them). Shared by tools/install_check.py (README's main install)
and tools/runtime_wheel_check.py (the torch-free runtime install).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import venv
from dataclasses import dataclass, field
from pathlib import Path

import psutil

MB = 2**20

# Run by the venv's own interpreter: every distribution with its version and the bytes of the
# files its RECORD lists inside site-packages (.pyc compiled at install time included; console
# scripts and data files elsewhere in the venv are left out), first on sys.path wins.
SIZES_PROBE = r'''
import importlib.metadata as md, json, os, sysconfig
roots = {os.path.realpath(sysconfig.get_paths()[k]) + os.sep for k in ("purelib", "platlib")}
out = {}
for d in md.distributions():
    name = d.metadata["Name"]
    if name in out:
        continue
    total = 0
    for f in d.files or []:
        p = os.path.realpath(d.locate_file(f))
        if any(p.startswith(r) for r in roots) and os.path.isfile(p) and not os.path.islink(d.locate_file(f)):
            total += os.path.getsize(p)
    out[name] = [d.version, total]
print(json.dumps(out))
'''


@dataclass
class Step:
    command: str
    rc: int
    seconds: float
    peak_rss_mb: float
    output: str = field(repr=False, default="")


def tree_bytes(path: Path) -> int:
    """Apparent size of every regular file under `path` (symlinks not followed)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


class Venv:
    """A fresh venv at `root`; `env` puts it first on PATH, as `. bin/activate` would."""

    def __init__(self, root: Path, python: str | None = None):
        self.root = root
        if python and Path(python).resolve() != Path(sys.executable).resolve():
            subprocess.run([python, "-m", "venv", str(root)], check=True)
        else:
            venv.create(root, with_pip=True)
        self.python = root / "bin" / "python"
        self.site = Path(next((root / "lib").glob("python*/site-packages")))
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        self.env.update(VIRTUAL_ENV=str(root), PATH=f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
        self.seed = self.distributions()  # what the venv holds before anything is installed

    def distributions(self) -> dict[str, tuple[str, int]]:
        # cwd: the venv, so that no *.egg-info of a checkout in the caller's cwd is counted
        out = subprocess.run([str(self.python), "-c", SIZES_PROBE], env=self.env, cwd=self.root, text=True,
                             capture_output=True, check=True).stdout
        return {k: (v[0], v[1]) for k, v in json.loads(out.strip().splitlines()[-1]).items()}

    def run(self, command: str | list[str], cwd: Path, echo: bool = True) -> Step:
        """Run a shell line (str) or an argv (list) in the venv, timed and with the tree's peak RSS."""
        text = command if isinstance(command, str) else " ".join(map(str, command))
        if echo:
            print(f"+ {text}", flush=True)
        argv = ["bash", "-c", command] if isinstance(command, str) else [str(c) for c in command]
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        peak = _watch_tree(proc)
        output = proc.stdout.read()
        rc = proc.wait()
        peak.stop.set()
        peak.thread.join()
        return Step(text, rc, round(time.perf_counter() - start, 1), round(peak.mb, 1), output)

    def report(self) -> dict:
        """Sizes now: the whole site-packages, what was added since the venv was made, per distribution."""
        now = self.distributions()
        added = {k: v for k, v in now.items() if self.seed.get(k) != v}
        return {
            "site_packages_mb": round(tree_bytes(self.site) / MB, 1),
            "venv_seed_mb": round(sum(s for _, s in self.seed.values()) / MB, 1),
            "venv_seed": sorted(f"{k}=={v}" for k, (v, _) in self.seed.items()),
            "added_mb": round(sum(s for _, s in added.values()) / MB, 1),
            "packages": [{"name": k, "version": v, "mb": round(s / MB, 1)}
                         for k, (v, s) in sorted(added.items(), key=lambda kv: -kv[1][1])],
        }


class _Peak:
    def __init__(self):
        self.mb = 0.0
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None


def _watch_tree(proc: subprocess.Popen, every: float = 0.2) -> _Peak:
    """Sample the summed RSS of `proc` and its descendants until told to stop."""
    peak = _Peak()

    def loop():
        while not peak.stop.is_set():
            try:
                root = psutil.Process(proc.pid)
                rss = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
                peak.mb = max(peak.mb, rss / MB)
            except psutil.Error:
                pass
            peak.stop.wait(every)

    peak.thread = threading.Thread(target=loop, daemon=True)
    peak.thread.start()
    return peak


def table(packages: list[dict], top: int = 12) -> str:
    """The largest distributions, one per line, for a terminal."""
    rows = packages[:top]
    rest = packages[top:]
    lines = [f"  {p['mb']:8.1f} MB  {p['name']}=={p['version']}" for p in rows]
    if rest:
        lines.append(f"  {sum(p['mb'] for p in rest):8.1f} MB  {len(rest)} more")
    return "\n".join(lines)
