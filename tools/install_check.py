#!/usr/bin/env python3
"""README's main install, as a new user pastes it: a fresh venv, the pip lines of README's first
bash block run as printed from the repository root, then what it cost and what it chose.

Prints the install's wall time and peak memory (the summed RSS of each step's process tree), the
packages it added to site-packages (per distribution, largest first; the venv's own pip and
setuptools apart), the torch build pip picked, and whether `xopt list` runs. --job also runs the
block's other steps (the main job: export and profile) in a scratch directory and times them.
Exit status 0 when every step succeeded and torch is the build --expect-torch names.

    python3 tools/install_check.py                 # what README's block installs here
    python3 tools/install_check.py --job --json out.json

CI runs it through tests/tools/test_install_check.py (XOPT_INSTALL_CHECK=1, set by .ci/run), which
also holds README's size figures (the ones marked `<!-- measured: KEY -->`) to the measurement.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from venv_measure import Venv, table  # noqa: E402  (a sibling script, not a package)

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TORCH_PROBE = ("import json, torch; print(json.dumps({'version': torch.__version__, "
               "'cuda': torch.version.cuda}))")
# `<!-- measured: main_install_gb -->1.3 GB`: a figure README states and a check measures
CLAIM = re.compile(r"<!--\s*measured:\s*([\w-]+)\s*-->\s*(?:about\s+)?([\d,]+(?:\.\d+)?)\s*(MB|GB)")


def first_block(text: str) -> str:
    """The body of README's first ```bash block (the commands a newcomer pastes first)."""
    m = re.search(r"^```(?:bash|sh|shell)\s*\n(.*?)^```", text, flags=re.M | re.S)
    if not m:
        raise ValueError("README has no ```bash block")
    return m.group(1)


def steps(block: str) -> list[str]:
    """The block's commands in order: continuation lines joined, comments dropped, `&&` split."""
    joined = re.sub(r"\\\n\s*", " ", block)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = re.sub(r"\s+#.*$", "", line)  # a trailing comment (after whitespace, as bash reads it)
        out += [s.strip() for s in line.split("&&") if s.strip()]
    return out


def is_install(step: str) -> bool:
    return re.search(r"\bpip3?\s+install\b", step) is not None


def claims(text: str) -> dict[str, float]:
    """README's marked figures, in MB: {key: value}."""
    out = {}
    for key, value, unit in CLAIM.findall(text):
        out[key] = float(value.replace(",", "")) * (1024 if unit == "GB" else 1)
    return out


def torch_build(env: Venv) -> dict:
    step = env.run([env.python, "-c", TORCH_PROBE], cwd=env.root, echo=False)
    if step.rc != 0:
        return {"version": None, "cuda": None, "error": step.output.strip().splitlines()[-1:]}
    return json.loads(step.output.strip().splitlines()[-1])


def check(workdir: Path, readme: Path = README, job: bool = False) -> dict:
    plan = steps(first_block(readme.read_text()))
    installs = [s for s in plan if is_install(s)]
    if not installs:
        raise ValueError(f"{readme.name}'s first bash block has no pip install step")
    t0 = time.perf_counter()
    env = Venv(workdir / "venv")
    res: dict = {"steps": []}
    for s in installs:  # from the repository root: `.` in the command is the checkout
        step = env.run(s, cwd=ROOT)
        res["steps"].append({"command": s, "rc": step.rc, "seconds": step.seconds, "peak_rss_mb": step.peak_rss_mb})
        if step.rc:
            res["error"] = step.output.strip()[-3000:]
            break
    res["install_seconds"] = round(sum(s["seconds"] for s in res["steps"]), 1)
    res["install_peak_rss_mb"] = max(s["peak_rss_mb"] for s in res["steps"])
    res.update(env.report())
    res["torch"] = torch_build(env)
    smoke = env.run([env.root / "bin" / "xopt", "list"], cwd=workdir)
    res["xopt_list_rc"] = smoke.rc
    if job and "error" not in res:
        scratch = workdir / "job"
        scratch.mkdir()
        for s in plan:
            if is_install(s):
                continue
            step = env.run(s, cwd=scratch)  # writes artifacts/ and reports/ where a user would: the cwd
            res["steps"].append({"command": s, "rc": step.rc, "seconds": step.seconds,
                                 "peak_rss_mb": step.peak_rss_mb})
            if step.rc:
                res["error"] = step.output.strip()[-3000:]
                break
    res["seconds"] = round(time.perf_counter() - t0, 1)
    return res


def verdict(res: dict, expect_torch: str) -> list[str]:
    """What is wrong with a result, one line each (empty: all good)."""
    bad = [f"step failed (exit {s['rc']}): {s['command']}" for s in res["steps"] if s["rc"]]
    version, cuda = res["torch"].get("version"), res["torch"].get("cuda")
    if version is None:
        bad.append("torch does not import in the new venv")
    elif expect_torch == "cpu" and (cuda is not None or not version.endswith("+cpu")):
        bad.append(f"torch {version} (CUDA {cuda}) is not the CPU build")
    elif expect_torch == "cuda" and cuda is None:
        bad.append(f"torch {version} is not a CUDA build")
    if res["xopt_list_rc"]:
        bad.append(f"xopt list exits {res['xopt_list_rc']} in the new venv")
    return bad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    ap.add_argument("--readme", type=Path, default=README, help="README to take the block from (default: the checkout's)")
    ap.add_argument("--job", action="store_true", help="also run the block's other steps (the main job) and time them")
    ap.add_argument("--expect-torch", choices=["cpu", "cuda", "any"], default="cpu",
                    help="the torch build the block must give (default: cpu)")
    ap.add_argument("--json", type=Path, help="write the result here as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the venv (its path is printed)")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="xopt-install-check-"))
    try:
        res = check(work, args.readme, args.job)
    finally:
        if args.keep:
            print(f"kept: {work / 'venv'}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    for s in res["steps"]:
        print(f"{s['seconds']:7.1f} s  peak {s['peak_rss_mb']:6.0f} MB  exit {s['rc']}  {s['command']}")
    print(f"torch {res['torch'].get('version')} (CUDA {res['torch'].get('cuda')}); site-packages "
          f"{res['site_packages_mb']:,.0f} MB, of which the install added {res['added_mb']:,.0f} MB "
          f"(the new venv's own {', '.join(res['venv_seed'])}: {res['venv_seed_mb']:,.0f} MB):")
    print(table(res["packages"]))
    bad = verdict(res, args.expect_torch)
    if "error" in res:
        print(res["error"][-1500:], file=sys.stderr)
    print("install check: " + ("OK" if not bad else "FAILED: " + "; ".join(bad)))
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
