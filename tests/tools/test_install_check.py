"""tools/install_check.py: README's first block is what it runs, and (XOPT_INSTALL_CHECK=1, set by
.ci/run) pasting that block into a fresh venv gives the CPU build of torch at the size README says."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def _load(name: str):
    sys.path.insert(0, str(TOOLS))  # the tools import their sibling venv_measure
    try:
        spec = importlib.util.spec_from_file_location(f"_xopt_tool_{name}", TOOLS / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(TOOLS))


check = _load("install_check")
lock = _load("lock_constraints")

BLOCK = """# a comment line, as README's block starts with one
python3 -m pip install -c .ci/constraints.txt ".[cpu,export]" && xopt export modnet --fp16 \\
    && xopt profile modnet --variants fp32,fp16   # trailing comment
pip install "torch==2.13.*"
"""


def test_steps_split_the_block_as_bash_runs_it():
    assert check.steps(BLOCK) == ['python3 -m pip install -c .ci/constraints.txt ".[cpu,export]"',
                                  "xopt export modnet --fp16", "xopt profile modnet --variants fp32,fp16",
                                  'pip install "torch==2.13.*"']
    assert [check.is_install(s) for s in check.steps(BLOCK)] == [True, False, False, True]


def test_first_block_is_the_first_bash_fence():
    text = "# t\n\n```python\nx = 1\n```\n\n```bash\npip install .\n```\n\n```bash\nlater\n```\n"
    assert check.first_block(text) == "pip install .\n"
    with pytest.raises(ValueError):
        check.first_block("no blocks\n")


def test_claims_read_the_marked_figures_in_mb():
    text = ("adds <!-- measured: main_install_mb -->1.4 GB here, <!-- measured: runtime_install_mb -->190 MB "
            "there, <!--measured:big_mb--> about 1,322 MB; an unmarked 5 GB")
    assert check.claims(text) == {"main_install_mb": 1.4 * 1024, "runtime_install_mb": 190.0, "big_mb": 1322.0}


def test_readmes_first_block_installs_with_the_lock_that_pins_torch():
    """The block a newcomer pastes takes torch's version from the lock (so pip finds the CPU build
    CI's machines carry), and the lock still pins torch after any refresh."""
    readme = check.README.read_text()
    installs = [s for s in check.steps(check.first_block(readme)) if check.is_install(s)]
    assert installs and all("-c .ci/constraints.txt" in s for s in installs)
    assert "torch" in lock.parse_constraints(lock.LOCK.read_text())
    assert lock.SEED.startswith("torch==")  # the refresh seeds torch's version: the lock keeps a torch pin
    assert "download.pytorch.org/whl/cpu" in check.first_block(readme)  # how to get the CPU build elsewhere
    assert {"main_install_mb", "runtime_install_mb"} <= set(check.claims(readme))


def test_ci_runs_the_install_checks():
    ci = (check.ROOT / ".ci" / "run").read_text()
    assert "export XOPT_INSTALL_CHECK=1" in ci and "export XOPT_WHEEL_CHECK=1" in ci


@pytest.mark.skipif(not os.environ.get("XOPT_INSTALL_CHECK"),
                    reason="installs torch and the export extra into a fresh venv (a few minutes): set "
                           "XOPT_INSTALL_CHECK=1 (CI does) or run tools/install_check.py")
def test_readmes_block_gives_the_cpu_build_at_the_size_readme_says(tmp_path):
    res = check.check(tmp_path)
    print(f"\nREADME's install: {res['install_seconds']} s, peak {res['install_peak_rss_mb']} MB, "
          f"added {res['added_mb']} MB; " + ", ".join(f"{p['name']} {p['mb']}" for p in res["packages"][:8]))
    assert check.verdict(res, "cpu") == [], res.get("error", "")[-2000:]
    names = {p["name"].lower() for p in res["packages"]}
    cuda_wheels = [n for n in names if n.startswith("nvidia-") and n != "nvidia-ml-py"]  # ml-py: NVML, ours
    assert "torch" in names and not cuda_wheels, sorted(names)
    claimed = check.claims(check.README.read_text())["main_install_mb"]
    assert abs(res["added_mb"] - claimed) <= 0.1 * claimed, (res["added_mb"], claimed)
