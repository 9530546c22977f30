"""The GPU window rehearsed on this CPU machine: its dry run stops at the first step with one
line; its offline install (the script's own --install-only step, the exact pip lines the window
runs) works in a fresh environment that has xopt's dependencies but not xopt; the environment
record reads every field from NVML (a fake here) and torch; the command fits the device tool."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import site
import subprocess
import sys
from pathlib import Path

import pytest

import fake_gpu
from xopt.machine import gpus

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "gpu_window.sh"


@pytest.mark.skipif(bool(gpus()), reason="a GPU is present: the dry run would measure")
def test_the_dry_run_without_a_gpu_is_one_line_and_a_failure(tmp_path):
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "OUT": str(tmp_path)})
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 3 and lines == [
        "gpu_window: no NVIDIA GPU present (nvidia-smi missing or it lists no device); nothing run"]
    assert not list(tmp_path.iterdir())  # nothing written


def test_the_documented_device_command_fits_the_tool():
    header = SCRIPT.read_text().split("set -uo pipefail")[0]
    command = re.search(r"whole command line\):\n#\s+(.+)\n", header).group(1).strip()
    assert command == "bash tools/gpu_window.sh" and len(command) < 2000
    assert 'carry [".whl"]' in header
    limits = [int(n) for n in re.findall(r"^\s*step \S+ (\d+) ", SCRIPT.read_text(), re.M)] + [10]
    assert sum(limits) <= 480  # every step's timeout together: under 8 minutes, so a rerun fits the 15


def _probe_wheel(tmp_path) -> Path:
    """A real wheel, built offline, standing in for the carried ones (which are for Python 3.12)."""
    src = tmp_path / "probe"
    (src / "xopt_window_probe").mkdir(parents=True)
    (src / "xopt_window_probe" / "__init__.py").write_text("VALUE = 42\n")
    (src / "pyproject.toml").write_text('[build-system]\nrequires = ["setuptools"]\nbuild-backend = '
                                        '"setuptools.build_meta"\n[project]\nname = "xopt-window-probe"\nversion = "1.0"\n')
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(wheels), str(src)], check=True, capture_output=True, timeout=120)
    return wheels


def test_the_offline_install_works_where_only_the_dependencies_are(tmp_path):
    """A venv that sees this environment's packages (torch, numpy, pip, setuptools...) through a
    .pth file, like the window's machine, but not xopt: the script's install step makes xopt
    importable from the checkout, offline, and puts the carried wheels on the path."""
    venv = tmp_path / "venv"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", str(venv)],
                   check=True, timeout=120)
    py = venv / "bin" / "python"
    target = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            capture_output=True, text=True, check=True).stdout.strip()
    outer = [p for p in site.getsitepackages() if Path(p).is_dir()]
    Path(target, "outer-environment.pth").write_text("\n".join(outer) + "\n")
    probe = [str(py), "-c", "import xopt.runtime; print(xopt.runtime.__file__)"]
    before = subprocess.run(probe, capture_output=True, text=True, cwd=tmp_path)
    assert before.returncode != 0 and "No module named 'xopt" in before.stderr  # a machine without xopt

    env = {**os.environ, "PYTHON": str(py), "XOPT_WHEELS": str(_probe_wheel(tmp_path)),
           "XOPT_WINDOW_SITE": str(tmp_path / "site")}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(["bash", str(SCRIPT), "--install-only"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "install: xopt from" in proc.stdout and "modnet" in proc.stdout
    assert (tmp_path / "site" / "xopt_window_probe" / "__init__.py").exists()

    after = subprocess.run(probe, capture_output=True, text=True, cwd=tmp_path)
    assert after.returncode == 0 and Path(after.stdout.strip()).parent == ROOT / "runtime"  # the checkout, editable
    measure = subprocess.run([str(py), str(ROOT / "tools" / "gpu_measure.py"), "--models", "modnet"],
                             capture_output=True, text=True, cwd=tmp_path, timeout=300)
    if not gpus():  # the tool itself runs from that install and gives its no-GPU answer
        assert measure.returncode == 2 and "nothing measured: no NVIDIA GPU" in measure.stderr, measure.stderr


def _gpu_env():
    spec = importlib.util.spec_from_file_location("gpu_env_under_test", ROOT / "tools" / "gpu_env.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_environment_record_reads_every_field(monkeypatch, tmp_path):
    fake_gpu.install(monkeypatch, fake_gpu.fake_nvml(fake_gpu.H100))
    env = _gpu_env()
    assert env.main(["--out", str(tmp_path / "env.json")]) == 0
    rec = json.loads((tmp_path / "env.json").read_text())
    nv = rec["nvml"]
    assert nv["name"] == "NVIDIA H100 80GB HBM3" and nv["driver"] == "580.159.04" and nv["cuda_driver"] == "13.0"
    assert nv["compute_capability"] == "9.0" and nv["clocks_mhz"]["sm"] == 1980 and nv["max_clocks_mhz"]["mem"] == 2619
    assert nv["mig_mode"] == {"current": 0, "pending": 0} and nv["ecc_mode"] == {"current": 1, "pending": 1}
    assert nv["power_limit_w"] == 700 and "NotSupported" in nv["application_clocks_mhz"]["sm"]["unavailable"]
    tf32 = rec["torch"]["tf32_default"]
    assert tf32["api"] in ("fp32_precision", "allow_tf32") and {"matmul", "cudnn_conv"} <= set(tf32)
    assert rec["requirements"]["satisfied"] and "numpy" in rec["requirements"]["installed"]


def test_the_environment_record_without_nvml_says_why():
    if gpus():
        pytest.skip("a GPU is present")
    assert "NVML" in _gpu_env().nvml_record()["unavailable"]
