"""Which TensorRT flavours are installed, which GPU is here, and whether TensorRT may
touch it: answered without creating a TensorRT object in this process.

Creating a TensorRT Runtime or Builder with no driver can segfault instead of raising
(tensorrt-lean does), so this module only reads package metadata and NVML; the one
question NVML cannot answer (does the runtime really start on this GPU?) is asked in a
child process, where a crash becomes a clean "no".
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache

from xopt.errors import UnknownChoiceError, UserError
from xopt.extras import dist_version


@dataclass(frozen=True)
class Flavour:
    name: str  # the --engine value
    module: str  # the Python module that builds and runs its engines
    dists: tuple[str, ...]  # distributions that may provide the module
    extra: str  # the xopt extra that installs it
    cross_compiles: bool  # builds for a chosen compute capability without that GPU

    def installed_version(self) -> str | None:
        if importlib.util.find_spec(self.module) is None:
            return None
        for dist in self.dists:
            v = dist_version(dist)
            if v:
                return v
        return "unknown"

    def install_hint(self) -> str:
        return f'pip install "xopt[{self.extra}]"'


FLAVOURS = {
    "trt": Flavour("trt", "tensorrt", ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11"), "trt", False),
    "trt-rtx": Flavour("trt-rtx", "tensorrt_rtx", ("tensorrt-rtx", "tensorrt_rtx"), "trt-rtx", True),
}


def flavour(name: str) -> Flavour:
    if name not in FLAVOURS:
        raise UnknownChoiceError("TensorRT flavour", name, FLAVOURS)
    return FLAVOURS[name]


def major(version: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 0


def require_flavour(name: str) -> tuple[Flavour, str]:
    """The flavour and its installed version, or a UserError saying how to install it."""
    fl = flavour(name)
    version = fl.installed_version()
    if version is None:
        raise UserError(f"{fl.module} is not installed (needed for --engine {name})", fl.install_hint())
    return fl, version


def sm_name(cc: str | None) -> str | None:
    """'8.6' -> 'SM86'; 'SM86' stays."""
    if not cc:
        return None
    cc = str(cc).strip().upper()
    if cc.startswith("SM"):
        return cc
    try:
        maj, minor = cc.split(".")
        return f"SM{int(maj)}{int(minor)}"
    except ValueError as exc:
        raise UserError(f"compute capability {cc!r} is not like '8.6' or 'SM86'", "pass e.g. 8.6") from exc


def cc_name(sm: str | None) -> str | None:
    """'SM86' -> '8.6'; '8.6' stays."""
    if not sm:
        return None
    sm = str(sm).strip().upper()
    if not sm.startswith("SM"):
        sm_name(sm)  # validates the "8.6" form
        return sm
    digits = sm[2:]
    return f"{digits[:-1]}.{digits[-1]}"


def gpus() -> list[dict]:
    """NVML's view; empty on a machine without a driver (the CI case)."""
    from xopt.machine import gpus as nvml_gpus

    return nvml_gpus()


def first_gpu() -> dict | None:
    found = gpus()
    return found[0] if found else None


def require_gpu(what: str) -> dict:
    gpu = first_gpu()
    if gpu is None:
        raise UserError(f"{what} needs an NVIDIA GPU with a driver, and NVML found none on this machine",
                        "run it on a machine with an NVIDIA GPU (engines can still be built here with --engine trt-rtx)")
    return gpu


_PROBE_CODE = r"""
import json, sys
mod = __import__(sys.argv[1])
logger = mod.Logger(mod.Logger.ERROR)
runtime = mod.Runtime(logger)
print(json.dumps({"ok": runtime is not None, "version": getattr(mod, "__version__", "unknown")}))
"""


@lru_cache(maxsize=4)
def probe_runtime(name: str, timeout: float = 120.0) -> tuple[bool, str]:
    """Create the flavour's Runtime in a child process: (works, why not).

    Only called once NVML has reported a GPU; a crash (signal) or error in the child
    is reported, never propagated.
    """
    fl = flavour(name)
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE_CODE, fl.module], capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"{fl.module} Runtime creation did not finish in {timeout:.0f} s"
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or [""])[-1][:300]
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
        return False, f"{fl.module} Runtime creation failed in a probe process ({how}): {tail}"
    try:
        answer = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return False, f"{fl.module} probe printed no answer"
    return bool(answer.get("ok")), "" if answer.get("ok") else f"{fl.module} Runtime could not be created"
