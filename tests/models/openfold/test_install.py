"""models/openfold/install.py: clear refusal without torch, idempotent when installed, the
compute-capability helper it supplies to OpenFold's setup.py, the architectures it compiles the
CUDA kernel for, and the compiler's first error line when a build fails."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[3] / "models" / "openfold" / "install.py"


def test_refuses_an_interpreter_without_torch(tmp_path):
    env = tmp_path / "bare"
    venv.create(env, with_pip=False)  # a Python with nothing installed
    py = env / "bin" / "python"
    proc = subprocess.run([sys.executable, str(TOOL), "--python", str(py)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1
    assert "torch is not importable" in proc.stderr and "xopt[openfold]" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_rejects_a_missing_sdist(tmp_path):
    proc = subprocess.run([sys.executable, str(TOOL), "--sdist", str(tmp_path / "nope.tar.gz"), "--force",
                           "--skip-deps"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "is not a file" in proc.stderr


def test_compute_capability_helper_answers_without_a_gpu():
    ns: dict = {}
    src = TOOL.read_text()
    helper = src.split("CC_HELPER = '''", 1)[1].split("'''", 1)[0]
    exec(compile(helper, "scripts/utils.py", "exec"), ns)
    cc, err = ns["get_nvidia_cc"]()
    import torch

    if torch.cuda.is_available():
        assert isinstance(cc, tuple) and len(cc) == 2 and err is None
    else:
        assert cc is None and "no CUDA" in err


@pytest.mark.openfold
def test_second_run_changes_nothing():
    proc = subprocess.run([sys.executable, str(TOOL)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "nothing to do" in proc.stdout and "pip install" not in proc.stdout


# ---- architectures OpenFold's CUDA kernel is compiled for, and what a failed build says ----

def _tool():
    """install_cuda.py, the installer's choice of architectures and flags and its error reading."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_xopt_openfold_install_cuda", TOOL.with_name("install_cuda.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


LOGS = Path(__file__).resolve().parent / "build_logs"  # pip's real output (paths anonymised)
NVCC13 = [f"compute_{a}" for a in (75, 80, 86, 87, 88, 89, 90, 100, 110, 103, 120, 121)]  # nvcc 13.0 --list-gpu-arch
TORCH_CU130 = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]  # torch 2.14.1+cu130 get_arch_list()


def test_no_gpu_builds_the_lowest_common_architecture_with_its_ptx():
    inst = _tool()
    assert inst.choose_archs(None, [], TORCH_CU130, NVCC13) == [("7.5", True)]
    # a torch built for older GPUs than nvcc supports: the lowest both can do
    assert inst.choose_archs(None, [], ["sm_50", "sm_60", "sm_70", "sm_80"], NVCC13) == [("8.0", True)]
    # nvcc too old to list its architectures: torch's lowest
    assert inst.choose_archs(None, [], TORCH_CU130, []) == [("7.5", True)]


def test_a_gpu_lets_setup_py_ask_it_and_torch_cuda_arch_list_overrides():
    inst = _tool()
    assert inst.choose_archs(None, [[8, 6]], TORCH_CU130, NVCC13) is None
    assert inst.choose_archs("native", [[8, 6]], TORCH_CU130, NVCC13) is None
    assert inst.choose_archs("8.6;9.0+PTX", [[8, 6]], TORCH_CU130, NVCC13) == [("8.6", False), ("9.0", True)]
    assert inst.choose_archs(" 8.6 10.0a ", [], TORCH_CU130, NVCC13) == [("8.6", False), ("10.0a", False)]


@pytest.mark.parametrize("text, words", [("3.7;8.6", "3.7"), ("Ampere", "'Ampere'"), (";", "empty")])
def test_a_bad_torch_cuda_arch_list_is_refused_in_one_line_before_any_build(text, words):
    inst = _tool()
    with pytest.raises(inst.InstallError) as err:
        inst.choose_archs(text, [], TORCH_CU130, NVCC13)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_nvcc_gets_the_other_architectures_ptx_standard_and_headers_through_its_env():
    inst = _tool()
    archs = [("7.5", False), ("8.6", True)]
    flags = inst.nvcc_flags(archs, "c++20", ["/v/nvidia/cu13/include"])
    assert flags == ["-gencode", "arch=compute_86,code=sm_86", "-gencode", "arch=compute_86,code=compute_86",
                     "-std=c++20", "-I/v/nvidia/cu13/include"]
    env = inst.build_env({"PATH": "/bin", "NVCC_APPEND_FLAGS": "-lineinfo", inst.CC_ENV: "stale"}, archs, flags)
    assert env[inst.CC_ENV] == "7.5"  # setup.py's own hook compiles the first as SASS
    assert env["NVCC_APPEND_FLAGS"].startswith("-lineinfo -gencode arch=compute_86,code=sm_86")
    plain = inst.build_env({"PATH": "/bin", inst.CC_ENV: "stale"}, None, [])
    assert plain == {"PATH": "/bin"}


def test_the_helper_setup_py_imports_answers_with_the_chosen_architecture(monkeypatch):
    ns: dict = {}
    helper = TOOL.read_text().split("CC_HELPER = '''", 1)[1].split("'''", 1)[0]
    exec(compile(helper, "scripts/utils.py", "exec"), ns)
    monkeypatch.setenv("XOPT_OPENFOLD_CC", "9.0a")
    cc, err = ns["get_nvidia_cc"]()
    assert cc == (9, "0a") and err is None
    # setup.py's own formatting of it: f"arch=compute_{major}{minor},code=sm_{major}{minor}"
    assert f"arch=compute_{cc[0]}{cc[1]},code=sm_{cc[0]}{cc[1]}" == "arch=compute_90a,code=sm_90a"


@pytest.mark.parametrize("log, first, in_tail", [
    ("nvcc13_compute_37.log", "nvcc fatal   : Unsupported gpu architecture 'compute_37'", False),
    ("torch214_cxx14.log", "/home/user/venv/lib/python3.11/site-packages/torch/include/torch/csrc/api/include/"
                           "torch/all.h:5:2: error: #error C++20 or later compatible compiler is required to use "
                           "PyTorch.", False),
    ("ld_no_cudart.log", "/usr/bin/ld: cannot find -lcudart: No such file or directory", True),
])
def test_a_failed_build_is_summed_up_by_the_compilers_first_error_line(log, first, in_tail):
    text = (LOGS / log).read_text()
    # the installer used to show the last 25 lines: the cause was out of sight in two of the three
    assert (first in "\n".join(ln.strip() for ln in text.splitlines()[-25:])) == in_tail
    assert _tool().first_error_line(text) == first


def test_without_a_compiler_error_the_first_python_or_pip_error_is_named():
    inst = _tool()
    out = ("  error: subprocess-exited-with-error\n      Traceback (most recent call last):\n"
           "      ModuleNotFoundError: No module named 'scripts'\nERROR: Failed to build 'openfold'\n")
    assert inst.first_error_line(out) == "ModuleNotFoundError: No module named 'scripts'"
    assert inst.first_error_line("ERROR: No matching distribution found for openfold==0.0.1\n").startswith("ERROR: No")
    assert inst.first_error_line("all fine\n") is None


def test_the_toolkit_root_comes_from_nvccs_own_report():
    dryrun = ("#$ _NVVM_BRANCH_=nvvm\n#$ _HERE_=/usr/local/cuda-13.0/bin\n#$ _THERE_=/usr/local/cuda-13.0/bin\n"
              "#$ TOP=/usr/local/cuda-13.0/bin/..\n#$ NVVMIR_LIBRARY_DIR=/usr/local/cuda-13.0/bin/../nvvm/libdevice\n")
    assert _tool().nvcc_top(dryrun) == "/usr/local/cuda-13.0/bin/.."
    assert _tool().nvcc_top("nvcc: NVIDIA (R) Cuda compiler driver\n") is None


NVCC = shutil.which("nvcc")


@pytest.mark.skipif(NVCC is None, reason="needs nvcc")
def test_real_nvcc_rejects_setup_pys_default_and_compiles_what_the_installer_chooses(tmp_path):
    """OpenFold's flags for a kernel, with setup.py's default architectures and with ours."""
    inst = _tool()
    src = tmp_path / "k.cu"
    src.write_text("__global__ void k(float* a) { a[threadIdx.x] *= 2.0f; }\n")
    arch_list = subprocess.run([NVCC, "--list-gpu-arch"], capture_output=True, text=True).stdout.split()
    base = [NVCC, "-c", str(src), "-o", str(tmp_path / "k.o"), "-std=c++14", "-maxrregcount=50"]
    old = subprocess.run(base + ["-gencode", "arch=compute_37,code=sm_37", "-gencode", "arch=compute_80,code=sm_80"],
                         capture_output=True, text=True, timeout=300)
    if "compute_37" not in arch_list:  # nvcc 12.x and earlier still took Kepler
        assert old.returncode != 0
        assert inst.first_error_line(old.stdout + old.stderr) == "nvcc fatal   : Unsupported gpu architecture 'compute_37'"
    archs = inst.choose_archs(None, [], [], arch_list)
    env = inst.build_env(dict(os.environ), archs, inst.nvcc_flags(archs, "c++17"))
    code = archs[0][0].replace(".", "")
    ours = base + ["-gencode", f"arch=compute_{code},code=sm_{code}"]  # setup.py's hook gives the first
    new = subprocess.run(ours, env=env, capture_output=True, text=True, timeout=300)
    assert new.returncode == 0, new.stderr
    assert (tmp_path / "k.o").stat().st_size > 0
    # NVCC_APPEND_FLAGS reached nvcc: the fat binary holds the SASS and the PTX
    plan = subprocess.run(ours + ["--dryrun"], env=env, capture_output=True, text=True, timeout=60).stderr
    fatbin = next(ln for ln in plan.splitlines() if "fatbinary" in ln)
    assert f"kind=elf,sm={code}" in fatbin and f"kind=ptx,sm={code}" in fatbin
