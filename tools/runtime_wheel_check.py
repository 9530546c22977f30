"""The runtime-only install, as an app ships it: build xopt's wheel, install it with only the
runtime dependencies (`xopt[cpu]`) into a fresh virtual environment, check torch is absent, and
run `xopt run MODEL INPUT` there against an export made in the full environment. Prints the
venv's size (site-packages) so the README's figure can be reproduced.

    python3 tools/runtime_wheel_check.py --artifacts artifacts/modnet --model modnet --input photo.png
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    print("+ " + " ".join(map(str, cmd)), flush=True)
    return subprocess.run([str(c) for c in cmd], text=True, capture_output=True, **kw)


def du_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20


def check(artifacts: Path, model: str, src: Path, out: Path, workdir: Path, extra: str = "cpu") -> dict:
    t0 = time.perf_counter()
    dist = workdir / "dist"
    r = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, ROOT])
    if r.returncode:
        raise SystemExit(f"wheel build failed:\n{r.stderr[-2000:]}")
    wheel = next(dist.glob("xopt-*.whl"))
    env_dir = workdir / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    r = _run([py, "-m", "pip", "install", "-q", f"{wheel}[{extra}]"])
    if r.returncode:
        raise SystemExit(f"runtime install failed:\n{r.stderr[-2000:]}")
    site = next((env_dir / "lib").glob("python*/site-packages"))
    size = du_mb(site)
    no_torch = _run([py, "-c", "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is not None)"])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    ran = _run([env_dir / "bin" / "xopt", "-q", "run", model, src, "-o", out, "--artifacts", artifacts],
               cwd=ROOT, env=env)  # from the repository root: the installed package, not the source tree
    imported = _run([py, "-c", "import sys, xopt.runtime; print(xopt.runtime.__file__); "
                     "sys.exit('torch' in sys.modules)"], cwd=ROOT, env=env)
    return {"wheel": wheel.name, "site_packages_mb": round(size, 1), "torch_absent": no_torch.returncode == 0,
            "run_rc": ran.returncode, "run_stdout": ran.stdout.strip(), "run_stderr": ran.stderr.strip()[-1500:],
            "runtime_module": imported.stdout.strip(), "torch_imported": imported.returncode != 0,
            "outputs": [str(p) for p in (out.iterdir() if out.is_dir() else [out]) if p.exists()],
            "seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--artifacts", required=True, type=Path)
    ap.add_argument("--model", required=True)
    ap.add_argument("--input", required=True, type=Path)
    ap.add_argument("--output", type=Path, default=None)
    ap.add_argument("--extra", default="cpu", help="extras of the runtime install (default cpu)")
    ap.add_argument("--keep", action="store_true", help="keep the venv (printed)")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="xopt-runtime-"))
    out = (args.output or work / "out").resolve()
    try:
        res = check(args.artifacts.resolve(), args.model, args.input.resolve(), out, work, args.extra)
    finally:
        if not args.keep:
            shutil.rmtree(work / "venv", ignore_errors=True)
    print(json.dumps(res, indent=1))
    ok = res["torch_absent"] and res["run_rc"] == 0 and not res["torch_imported"] and res["outputs"]
    print("runtime-only install: " + ("OK" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
