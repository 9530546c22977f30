"""models/openfold/install.py: clear refusal without torch, idempotent when installed, the
compute-capability helper it supplies to OpenFold's setup.py."""
from __future__ import annotations

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
