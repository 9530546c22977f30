"""The runtime-only install, as an app ships it: build xopt's wheel, install it with only the
runtime dependencies (`xopt[cpu]`, with README's `-c .ci/constraints.txt`) into a fresh virtual
environment, check torch and onnx are absent, and run `xopt run MODEL INPUT` there against an
export made in the full environment. Prints what the install added to site-packages, package by
package (the fresh venv's own pip and setuptools apart), and its wall time and peak memory, so
README's figure can be reproduced.

    python3 tools/runtime_wheel_check.py --artifacts artifacts/modnet --model modnet --input photo.png
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from venv_measure import Venv, table  # noqa: E402  (a sibling script, not a package)

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / ".ci" / "constraints.txt"
ABSENT = "import importlib.util as u, json; print(json.dumps({m: u.find_spec(m) is None for m in ('torch', 'onnx')}))"


def check(artifacts: Path, model: str, src: Path, out: Path, workdir: Path, extra: str = "cpu") -> dict:
    """Build, install, run; the venv stays at workdir/venv for more checks (the caller removes it)."""
    t0 = time.perf_counter()
    dist = workdir / "dist"
    print(f"+ pip wheel --no-deps -w {dist} {ROOT}", flush=True)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
                       text=True, capture_output=True)
    if r.returncode:
        raise SystemExit(f"wheel build failed:\n{r.stderr[-2000:]}")
    wheel = next(dist.glob("xopt-*.whl"))
    env = Venv(workdir / "venv")
    install = env.run([env.python, "-m", "pip", "install", "-q", "-c", LOCK, f"{wheel}[{extra}]"], cwd=workdir)
    if install.rc:
        raise SystemExit(f"runtime install failed:\n{install.output[-2000:]}")
    sizes = env.report()
    absent = json.loads(env.run([env.python, "-c", ABSENT], cwd=workdir, echo=False).output.strip().splitlines()[-1])
    # from the repository root: the installed package must win over the source tree
    ran = env.run([env.root / "bin" / "xopt", "-q", "run", model, src, "-o", out, "--artifacts", artifacts], cwd=ROOT)
    imported = env.run([env.python, "-c", "import sys, xopt.runtime; print(xopt.runtime.__file__); "
                        "sys.exit('torch' in sys.modules or 'onnx' in sys.modules)"], cwd=ROOT)
    return {"wheel": wheel.name, "install_seconds": install.seconds, "install_peak_rss_mb": install.peak_rss_mb,
            **sizes, "torch_absent": absent["torch"], "onnx_absent": absent["onnx"],
            "run_rc": ran.rc, "run_output": ran.output.strip()[-1500:],
            "runtime_module": imported.output.strip().splitlines()[-1] if imported.output.strip() else "",
            "heavy_imported": imported.rc != 0,
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
        if args.keep:
            print(f"kept: {work / 'venv'}")
        else:
            shutil.rmtree(work / "venv", ignore_errors=True)
    print(json.dumps({k: v for k, v in res.items() if k != "packages"}, indent=1))
    print(f"xopt[{args.extra}] added {res['added_mb']:,.1f} MB to site-packages in {res['install_seconds']:.0f} s "
          f"(peak {res['install_peak_rss_mb']:.0f} MB); the new venv's own {', '.join(res['venv_seed'])}: "
          f"{res['venv_seed_mb']:,.1f} MB more:")
    print(table(res["packages"], top=30))
    ok = (res["torch_absent"] and res["onnx_absent"] and res["run_rc"] == 0 and not res["heavy_imported"]
          and res["outputs"])
    print("runtime-only install: " + ("OK" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
