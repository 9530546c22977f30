#!/usr/bin/env python3
"""Install OpenFold (PyPI `openfold==0.0.1`) into a Python environment that already has torch.

Why a script: PyPI's openfold 0.0.1 is a real snapshot of OpenFold's code, but its sdist does
not build as published. Its setup.py imports `scripts.utils.get_nvidia_cc`, a helper the sdist
does not ship, and it imports torch at build time (so build isolation, which hides torch, fails).
This script:

  1. checks torch is importable in the target interpreter (install it first, e.g. with
     `pip install "xopt[openfold]"`, which also brings the runtime dependencies);
  2. installs the runtime dependencies that are missing (ml-collections, dm-tree,
     biopython==1.81 -- newer releases dropped `Bio.Data.SCOPData`, which OpenFold's mmCIF
     parser imports -- and scipy);
  3. downloads the sdist with `pip download --no-deps --no-binary :all:` (or takes --sdist),
     adds a small `scripts/utils.py` that reports the GPU's compute capability, and builds it
     with `pip install --no-build-isolation --no-deps`. With a CPU torch (or no nvcc) this
     compiles OpenFold's CPU stub of the `attn_core_inplace_cuda` extension (xopt routes around
     the stub at run time). With a CUDA torch and nvcc it compiles the real kernel: for the local
     GPU; without a GPU for the lowest architecture both torch and nvcc support plus its PTX,
     which the driver compiles for any newer GPU (OpenFold's setup.py would otherwise add
     compute_37 and others that current nvcc rejects); TORCH_CUDA_ARCH_LIST (torch's syntax,
     e.g. "8.6;8.9+PTX") chooses the architectures instead. When a build fails, the compiler's
     first error line is printed and the whole output kept in a log file;
  4. verifies `import torch, attn_core_inplace_cuda, openfold` and the model classes.

It is idempotent: a working install of the same version is left alone unless --force.
Exit status 0 on success, 1 with a one-line reason otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

if __package__:
    from . import install_cuda as cuda
else:  # run as a script, python models/openfold/install.py: its folder is sys.path[0]
    import install_cuda as cuda

VERSION = "0.0.1"
RUNTIME_DEPS = {  # distribution -> pip requirement
    "ml-collections": "ml-collections>=0.1",
    "dm-tree": "dm-tree>=0.1.8",
    "biopython": "biopython==1.81",
    "scipy": "scipy>=1.10",
}
PINNED = {"biopython": "1.81"}

# The helper setup.py imports. It returns (compute capability or None, error text or None);
# setup.py then compiles only for that capability, or for a default list when None (3.7, 5.2,
# 6.1, 7.0, 8.0: nvcc 12.9 and later reject the first ones). XOPT_OPENFOLD_CC carries
# install_cuda.py's choice when there is no GPU to ask or TORCH_CUDA_ARCH_LIST overrides it.
CC_HELPER = '''"""Written by xopt's models/openfold/install.py: report the local GPU's compute capability."""
import os


def get_nvidia_cc():
    chosen = os.environ.get("XOPT_OPENFOLD_CC")  # "8.6" or "9.0a": chosen by install.py
    if chosen:
        major, minor = chosen.split(".")
        return (int(major), minor), None
    try:
        import torch
    except ImportError as exc:
        return None, str(exc)
    if not torch.cuda.is_available():
        return None, "no CUDA device visible"
    return tuple(torch.cuda.get_device_capability(0)), None
'''

# Printed as JSON by the target interpreter: what is installed there.
PROBE = r'''
import importlib.metadata as md, json, sys
out = {"python": sys.version.split()[0], "deps": {}}
for dist in %(deps)r:
    try:
        out["deps"][dist] = md.version(dist)
    except md.PackageNotFoundError:
        out["deps"][dist] = None
try:
    import torch
    out["torch"] = torch.__version__
    out["cuda"] = bool(torch.cuda.is_available())
    out["torch_cuda"] = torch.version.cuda
    out["arch_list"] = torch.cuda.get_arch_list() if torch.version.cuda else []
    out["gpu_cc"] = [list(torch.cuda.get_device_capability(i)) for i in range(torch.cuda.device_count())]
    if torch.version.cuda:
        import glob, os, re
        from torch.utils.cpp_extension import CUDA_HOME
        out["cuda_home"] = CUDA_HOME
        # the C++ standard this torch's headers demand (OpenFold's setup.py asks nvcc for C++14)
        h = os.path.join(os.path.dirname(torch.__file__), "include", "torch", "csrc", "api", "include", "torch", "all.h")
        m = re.search(r"C\+\+(\d+) or later", open(h).read()) if os.path.exists(h) else None
        out["cxx_std"] = "c++" + m.group(1) if m else None
        # headers of the CUDA libraries torch came with (pip's nvidia-* wheels)
        out["pip_cuda_includes"] = sorted({d for p in sys.path for d in glob.glob(os.path.join(p, "nvidia", "*", "include"))})
except Exception as exc:
    out["torch"] = None
    out["torch_error"] = repr(exc)
try:
    out["openfold"] = md.version("openfold")
except md.PackageNotFoundError:
    out["openfold"] = None
if out.get("torch") and out["openfold"]:
    try:
        import attn_core_inplace_cuda  # needs torch imported first (libtorch symbols)
        import openfold
        from openfold.model.model import AlphaFold
        from openfold.data.feature_pipeline import FeaturePipeline
        from openfold.np import protein
        out["import_ok"] = True
    except Exception as exc:
        out["import_ok"] = False
        out["import_error"] = repr(exc)
print(json.dumps(out))
'''


InstallError = cuda.InstallError


def say(msg: str) -> None:
    print(f"[install_openfold] {msg}", flush=True)


def run(cmd: list[str], env: dict | None = None, cwd: str | None = None) -> str:
    say("$ " + " ".join(cmd))
    proc = subprocess.run(cmd, env=env, cwd=cwd, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        fd, log = tempfile.mkstemp(prefix="xopt-openfold-install-", suffix=".log")
        with os.fdopen(fd, "w") as f:
            f.write("$ " + " ".join(cmd) + "\n" + proc.stdout)
        cause = cuda.first_error_line(proc.stdout) or "no error line in its output"
        raise InstallError(f"{cause}\n  (exit {proc.returncode} from: {' '.join(cmd[:4])} ...; "
                           f"its whole output: {log})")
    return proc.stdout


def probe(python: str) -> dict:
    proc = subprocess.run([python, "-c", PROBE % {"deps": list(RUNTIME_DEPS)}],
                          text=True, capture_output=True)
    if proc.returncode != 0:
        raise InstallError(f"cannot run {python}: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def missing_deps(state: dict) -> list[str]:
    need = []
    for dist, req in RUNTIME_DEPS.items():
        have = state["deps"].get(dist)
        if have is None or (dist in PINNED and have != PINNED[dist]):
            need.append(req)
    return need


def fetch_sdist(python: str, workdir: Path) -> Path:
    """pip download runs setup.py to read metadata, so it needs the helper and torch too."""
    helper = workdir / "helper"
    (helper / "scripts").mkdir(parents=True)
    (helper / "scripts" / "utils.py").write_text(CC_HELPER)
    env = dict(os.environ, PYTHONPATH=str(helper) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run([python, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--no-build-isolation",
         f"openfold=={VERSION}", "-d", str(workdir)], env=env)
    found = sorted(workdir.glob(f"openfold-{VERSION}.tar.gz"))
    if not found:
        raise InstallError(f"pip download left no openfold-{VERSION}.tar.gz in {workdir}")
    return found[0]


def unpack_with_helper(sdist: Path, workdir: Path) -> Path:
    with tarfile.open(sdist) as tar:
        try:
            tar.extractall(workdir, filter="data")
        except TypeError:  # Python without extraction filters
            tar.extractall(workdir)
    roots = [p for p in workdir.iterdir() if p.is_dir() and (p / "setup.py").exists()]
    if len(roots) != 1:
        raise InstallError(f"{sdist} does not unpack to one source tree with a setup.py")
    src = roots[0]
    scripts = src / "scripts"
    scripts.mkdir(exist_ok=True)
    (scripts / "__init__.py").touch()
    if not (scripts / "utils.py").exists():
        (scripts / "utils.py").write_text(CC_HELPER)
        say(f"supplied the missing scripts/utils.py in {src.name}")
    return src


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    ap.add_argument("--python", default=sys.executable, help="interpreter to install into (default: this one)")
    ap.add_argument("--sdist", type=Path, help=f"use this openfold-{VERSION}.tar.gz instead of downloading it")
    ap.add_argument("--skip-deps", action="store_true", help="do not install the runtime dependencies")
    ap.add_argument("--force", action="store_true", help="rebuild even if a working openfold is installed")
    ap.add_argument("--keep-build", type=Path, help="build in this directory and keep it (default: a temp dir)")
    args = ap.parse_args(argv)
    try:
        return install(args)
    except InstallError as exc:
        print(f"[install_openfold] error: {exc}", file=sys.stderr)
        return 1


def install(args) -> int:
    python = args.python
    state = probe(python)
    if not state.get("torch"):
        raise InstallError(f"torch is not importable in {python} ({state.get('torch_error', '')}); install torch "
                           "first, e.g. pip install \"xopt[openfold]\" (CPU: add the CPU wheel index)")
    say(f"python {state['python']} at {python}; torch {state['torch']} (CUDA {'yes' if state['cuda'] else 'no'})")

    need = [] if args.skip_deps else missing_deps(state)
    if need:
        run([python, "-m", "pip", "install", *need])
        say("installed runtime dependencies: " + ", ".join(need))
    else:
        say("runtime dependencies already present" if not args.skip_deps else "skipping runtime dependencies")

    if state.get("openfold") == VERSION and state.get("import_ok") and not args.force and not need:
        say(f"openfold {VERSION} is installed and imports; nothing to do (--force rebuilds it)")
        return 0
    if state.get("openfold") and state["openfold"] != VERSION and not args.force:
        raise InstallError(f"openfold {state['openfold']} is installed (not {VERSION}); it may come from "
                           "OpenFold's own repository -- keep it, or pass --force to replace it")
    if state.get("openfold") == VERSION and state.get("import_ok") and not args.force:
        say(f"openfold {VERSION} already installed and importable")
    else:
        build_and_install(python, args, state)

    final = probe(python)
    if not final.get("import_ok"):
        raise InstallError(f"openfold installed but does not import: {final.get('import_error')}")
    kernel = "CUDA kernel" if final.get("torch_cuda") and final.get("cuda_home") else "CPU stub"
    say(f"done: openfold {final['openfold']} imports with torch {final['torch']}; extension: {kernel}"
        f"{'' if final['cuda'] else ' (no GPU here: xopt supplies the CPU softmax)'}")
    return 0


def build_and_install(python: str, args, state: dict) -> None:
    env = cuda.kernel_env(state, say)  # before any download: a bad TORCH_CUDA_ARCH_LIST stops here
    tmp = None
    if args.keep_build:
        workdir = args.keep_build.resolve()
        if workdir.exists() and any(workdir.iterdir()):
            raise InstallError(f"--keep-build directory {workdir} is not empty; pass an empty or new directory")
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.mkdtemp(prefix="xopt-openfold-")
        workdir = Path(tmp)
    try:
        if args.sdist:
            if not args.sdist.is_file():
                raise InstallError(f"--sdist {args.sdist} is not a file")
            sdist = args.sdist
            say(f"using sdist {sdist}")
        else:
            sdist = fetch_sdist(python, workdir)
            say(f"downloaded {sdist.name}")
        src = unpack_with_helper(sdist, workdir)
        # torch must be visible to setup.py, hence no build isolation; --no-deps because
        # openfold 0.0.1 declares none and the runtime deps were handled above.
        run([python, "-m", "pip", "install", "--no-build-isolation", "--no-deps",
             *(["--force-reinstall"] if args.force else []), str(src)], env=env)
        say(f"built and installed openfold {VERSION} from {sdist.name}")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
