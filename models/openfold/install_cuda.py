"""How OpenFold's CUDA kernel is compiled, for models/openfold/install.py: the architectures,
C++ standard and headers nvcc gets, and the compiler's own first error line when it fails.

OpenFold 0.0.1's setup.py compiles for one compute capability, which it takes from a helper
(`scripts/utils.get_nvidia_cc`, supplied by install.py) or, without a GPU, for 3.7, 5.2, 6.1,
7.0 and 8.0, which current nvcc rejects; it also asks nvcc for C++14, older than torch's headers
accept. The helper answers with the first architecture chosen here (XOPT_OPENFOLD_CC); the others,
each PTX, the C++ standard and missing library headers reach nvcc through NVCC_APPEND_FLAGS, which
nvcc reads on every call. Nothing in OpenFold's sources is edited.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

CC_ENV = "XOPT_OPENFOLD_CC"
# Library headers torch's CUDA headers include; a toolkit holding only nvcc and the runtime lacks them
LIBRARY_HEADERS = ("cublas_v2.h", "cublasLt.h", "cusparse.h", "cusolverDn.h")


class InstallError(Exception):
    pass


def parse_arch_list(text: str) -> list[tuple[str, bool]]:
    """TORCH_CUDA_ARCH_LIST in torch's syntax ("7.5;8.6+PTX", spaces allowed) -> [("7.5", False),
    ("8.6", True)]; named architectures ("Ampere") are torch's shorthand, not accepted here."""
    out = []
    for item in [t for t in re.split(r"[;\s]+", text.strip()) if t]:
        m = re.fullmatch(r"(\d+\.\d+[af]?)(\+PTX)?", item)
        if not m:
            raise InstallError(f"TORCH_CUDA_ARCH_LIST entry {item!r} is not a compute capability; "
                               "write numbers such as 8.6 or 8.9+PTX, separated by ';'")
        out.append((m.group(1), bool(m.group(2))))
    if not out:
        raise InstallError("TORCH_CUDA_ARCH_LIST is empty; unset it or name architectures such as 8.6")
    return out


def _code(arch: str) -> str:
    return arch.replace(".", "")  # "8.6" -> "86", "9.0a" -> "90a"


def choose_archs(env_list: str | None, gpu_cc: list, torch_archs: list[str], nvcc_archs: list[str]):
    """What to compile OpenFold's kernel for: None lets setup.py ask the local GPU (its own path);
    otherwise [(arch, with PTX)]. nvcc_archs: `nvcc --list-gpu-arch` (compute_75, ...), empty when
    unknown; torch_archs: torch.cuda.get_arch_list() (sm_75, ...)."""
    supported = {a.split("_", 1)[1] for a in nvcc_archs}
    if env_list and env_list != "native":
        chosen = parse_arch_list(env_list)
        # nvcc lists compute_90, not the arch-specific compute_90a or family compute_100f
        bad = [a for a, _ in chosen if supported and _code(a).rstrip("af") not in supported]
        if bad:
            raise InstallError(f"TORCH_CUDA_ARCH_LIST names {', '.join(bad)}, which this nvcc cannot compile for "
                               f"(it takes {', '.join(sorted(nvcc_archs, key=_num))}); choose among those")
        return chosen
    if gpu_cc:
        return None
    ours = [a.split("_", 1)[1] for a in torch_archs if a.startswith("sm_")]
    both = [a for a in ours if not supported or a in supported] or sorted(supported, key=_num)
    if not both:
        raise InstallError("no GPU, no TORCH_CUDA_ARCH_LIST, and neither torch nor nvcc lists an architecture; "
                           "set TORCH_CUDA_ARCH_LIST, e.g. TORCH_CUDA_ARCH_LIST=8.6")
    low = min(both, key=_num)
    return [(f"{low[:-1]}.{low[-1]}", True)]  # "75" -> "7.5", "100" -> "10.0"


def _num(code: str) -> tuple[int, str]:
    digits = re.sub(r"\D", "", code)
    return int(digits), code


def nvcc_flags(archs: list[tuple[str, bool]] | None, std: str | None = None, includes=()) -> list[str]:
    """What nvcc gets on top of setup.py's flags: the architectures after the first (setup.py's
    own hook takes that one) and every PTX; the C++ standard torch's headers need (nvcc takes
    the last -std it is given); include dirs for CUDA library headers the toolkit lacks."""
    flags = []
    for i, (arch, ptx) in enumerate(archs or []):
        code = _code(arch)
        if i:
            flags += ["-gencode", f"arch=compute_{code},code=sm_{code}"]
        if ptx:
            flags += ["-gencode", f"arch=compute_{code},code=compute_{code}"]
    if std:
        flags.append(f"-std={std}")
    return flags + [f"-I{d}" for d in includes]


def build_env(base: dict, archs: list[tuple[str, bool]] | None, flags: list[str]) -> dict:
    """pip's environment: the first architecture for setup.py's hook, the rest for nvcc through
    NVCC_APPEND_FLAGS, which nvcc reads on each call (after any the user set)."""
    env = {k: v for k, v in base.items() if k != CC_ENV}
    if archs:
        env[CC_ENV] = archs[0][0]
    if flags:
        env["NVCC_APPEND_FLAGS"] = " ".join(filter(None, [base.get("NVCC_APPEND_FLAGS", ""), *flags]))
    return env


# A compiler's or linker's own error line, in the order a build prints them; then Python's
# (setup.py's own failures) and pip's
_ERRORS = (
    re.compile(r"nvcc (fatal|error)\s*:|\S+:\d+(:\d+)?: (fatal )?error\b|\S+\(\d+\): (catastrophic )?error\b|"
               r"\bfatal error:|undefined reference to|\bld: cannot find|collect2: error"),
    re.compile(r"^[\w.]*(Error|Exception): "),
    re.compile(r"^ERROR: "),
)


def first_error_line(output: str) -> str | None:
    """The first line a compiler or linker wrote as an error, else the first Python exception,
    else pip's first error (pip prints the build's output indented: stripped here)."""
    lines = [ln.strip() for ln in output.splitlines()]
    for pattern in _ERRORS:
        for ln in lines:
            if pattern.search(ln):
                return ln
    return None


def nvcc_archs(cuda_home: str | None) -> list[str]:
    """`nvcc --list-gpu-arch` (compute_75, ...); empty when nvcc is absent or too old to say."""
    if not cuda_home:
        return []
    try:
        out = subprocess.run([str(Path(cuda_home) / "bin" / "nvcc"), "--list-gpu-arch"], text=True,
                             capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return re.findall(r"compute_\d+a?", out.stdout) if out.returncode == 0 else []


def nvcc_top(dryrun: str) -> str | None:
    """The toolkit root nvcc reports in `nvcc --dryrun` (its `#$ TOP=...` line)."""
    m = re.search(r"^#\$ TOP=(.+?)\s*$", dryrun, flags=re.M)
    return m.group(1) if m else None


def toolkit_root(cuda_home: str) -> str:
    """The CUDA toolkit nvcc belongs to. torch derives CUDA_HOME from where nvcc sits on PATH,
    which a wrapper script such as /usr/local/bin/nvcc turns into a folder without the toolkit's
    headers and libraries (the link then fails: cannot find -lcudart)."""
    if (Path(cuda_home) / "include" / "cuda_runtime.h").exists():
        return cuda_home
    try:
        out = subprocess.run([str(Path(cuda_home) / "bin" / "nvcc"), "--dryrun", "-E", "-x", "cu", os.devnull],
                             text=True, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return cuda_home
    top = nvcc_top(out.stdout + out.stderr)
    return str(Path(top).resolve()) if top and (Path(top) / "include").is_dir() else cuda_home


def kernel_env(state: dict, say) -> dict:
    """pip's environment for building OpenFold from the target interpreter's probe (`state`):
    which toolkit, architectures, C++ standard and headers, each said once through `say`."""
    env = dict(os.environ)
    if not (state.get("torch_cuda") and state.get("cuda_home")):
        say("CPU torch (or no nvcc): building OpenFold's CPU stub of its kernel")
        return build_env(env, None, [])
    archs = choose_archs(os.environ.get("TORCH_CUDA_ARCH_LIST"), state.get("gpu_cc") or [],
                         state.get("arch_list") or [], nvcc_archs(state["cuda_home"]))
    home = state["cuda_home"] if os.environ.get("CUDA_HOME") else toolkit_root(state["cuda_home"])
    if home != state["cuda_home"]:
        say(f"building with CUDA_HOME={home}, nvcc's own toolkit (torch took {state['cuda_home']} from "
            "where nvcc sits on PATH)")
        env["CUDA_HOME"] = home
    toolkit = Path(home) / "include"
    lacking = not all((toolkit / h).exists() for h in LIBRARY_HEADERS)
    includes = (state.get("pip_cuda_includes") or []) if lacking else []
    if archs is None:
        say("compiling OpenFold's CUDA kernel for the local GPU (compute capability "
            f"{'.'.join(map(str, state['gpu_cc'][0]))}); TORCH_CUDA_ARCH_LIST chooses others")
    else:
        names = ";".join(a + ("+PTX" if ptx else "") for a, ptx in archs)
        why = "TORCH_CUDA_ARCH_LIST" if os.environ.get("TORCH_CUDA_ARCH_LIST") else \
            "no GPU visible; the PTX runs on any newer GPU; TORCH_CUDA_ARCH_LIST chooses others"
        say(f"compiling OpenFold's CUDA kernel for {names} ({why})")
    if includes:
        say(f"{toolkit} lacks the CUDA library headers torch includes: taking them from torch's nvidia-* wheels")
    return build_env(env, archs, nvcc_flags(archs, state.get("cxx_std"), includes))
