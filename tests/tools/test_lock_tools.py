"""tools/lock_constraints.py and tools/check_newest.py: the pure parts (no venv, no network)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_xopt_tool_{name}", TOOLS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


lock = _load("lock_constraints")
newest = _load("check_newest")

COMMAND = ('python3 -m pip install -c .ci/constraints.txt -e ".[test,trt-rtx,openfold,tf]" && '
           "python3 tools/install_openfold.py && python3 -m pytest -q")
README = f"# x\n\nInstall:\n\n<!-- test-command -->\n```bash\n{COMMAND}\n```\n\nmore\n"


def test_readme_test_command_is_the_line_after_the_marker_and_fence():
    assert lock.readme_test_command(README) == COMMAND
    assert lock.readme_test_command("<!-- test-command -->\npython3 -m pytest\n") == "python3 -m pytest"
    with pytest.raises(ValueError):
        lock.readme_test_command("# no marker\n")


def test_extras_and_setup_steps_come_from_the_test_command():
    assert lock.extras_of(COMMAND) == "test,trt-rtx,openfold,tf"
    assert lock.extras_of("pip install -e '.[test, tf]'") == "test,tf"
    assert lock.setup_steps(COMMAND) == ["python3 tools/install_openfold.py"]
    with pytest.raises(ValueError):
        lock.extras_of("pip install xopt")


def test_the_real_readme_names_extras_and_a_pytest_command():
    extras, _ = lock.readme_plan(None)
    assert "test" in extras.split(",")
    assert "pytest" in lock.readme_test_command((lock.REPO / "README.md").read_text())
    assert lock.readme_plan("test")[0] == "test"


def test_render_pins_every_distribution_sorted_with_a_header():
    dists = {"Jinja2": "3.1.6", "torch": "2.13.0+cpu", "xopt": "0.1.0", "openfold": "0.0.1",
             "typing_extensions": "4.16.0", "pip": "26.3", "onnxruntime": "1.31.1"}
    text = lock.render_constraints(dists, extras="test,tf", steps=["python3 tools/install_openfold.py"],
                                   pip="26.3", python="3.11.7", date="2026-01-02")
    lines = text.splitlines()
    header = [ln for ln in lines if ln.startswith("#") and "openfold==" not in ln]
    assert header == lines[:len(header)]  # the header comes first
    assert any("2026-01-02" in ln and "3.11.7" in ln for ln in header)
    assert any("tools/lock_constraints.py" in ln for ln in header)
    assert any('".[test,tf]"' in ln and "torch==2.13.*" in ln and "install_openfold" in ln for ln in header)
    body = lines[len(header):]
    assert [ln.split("==")[0].lstrip("# ") for ln in body] == [
        "jinja2", "onnxruntime", "openfold", "pip", "torch", "typing-extensions"]
    assert body[2].startswith("# openfold==0.0.1")  # a note, not a pin
    assert not any("xopt" in ln for ln in body)
    # the local tag goes; a pip-style inline comment says why
    assert body[4].startswith("torch==2.13.0  #") and "2.13.0+cpu" in body[4]
    assert lock.parse_constraints(text) == {"jinja2": "3.1.6", "onnxruntime": "1.31.1", "pip": "26.3",
                                            "torch": "2.13.0", "typing-extensions": "4.16.0"}


def test_parse_constraints_reads_pins_only():
    text = ("# header\n\ntorch==2.13.*  # CPU build\nPyYAML == 6.0.2\nml_collections==1.0.0\n"
            "# openfold==0.0.1  (note)\nnumpy>=1.26\n-c other.txt\nfoo==1.0; python_version<'3.12'\n")
    assert lock.parse_constraints(text) == {"torch": "2.13.*", "pyyaml": "6.0.2", "ml-collections": "1.0.0",
                                            "foo": "1.0"}


def test_the_committed_lock_parses_and_keeps_torch_on_the_cpu_build():
    pins = lock.parse_constraints(lock.LOCK.read_text())
    assert pins["torch"].startswith("2.13.")
    assert "xopt" not in pins and "openfold" not in pins


def test_diff_lists_changed_added_and_removed_packages():
    locked = {"onnxruntime": "1.31.1", "numpy": "2.3.0", "torch": "2.13.0", "gone": "1.0", "pip": "26.3"}
    fresh = {"onnxruntime": "1.32.0", "NumPy": "2.3.0", "torch": "2.13.0+cpu", "new_pkg": "0.1",
             "pip": "26.3", "xopt": "0.1.0", "openfold": "0.0.1"}
    assert lock.diff_versions(locked, fresh) == [
        ("gone", "1.0", "-"), ("new-pkg", "-", "0.1"), ("onnxruntime", "1.31.1", "1.32.0")]
    assert lock.diff_versions(locked, dict(locked)) == []


def test_table_aligns_columns():
    table = lock.format_table([("onnxruntime", "1.31.1", "1.32.0"), ("pip", "26.3", "26.4")])
    lines = table.splitlines()
    assert lines[0].split() == ["package", "locked", "newest"]
    assert len({ln.index(ln.split()[1]) for ln in lines}) == 1  # second column starts at one offset


def test_atomic_write_leaves_no_partial(tmp_path):
    out = tmp_path / "c.txt"
    out.write_text("old\n")
    lock.write_atomic(out, "new\n")
    assert out.read_text() == "new\n" and [p.name for p in tmp_path.iterdir()] == ["c.txt"]


@pytest.mark.parametrize("output, line", [
    ("....\n1 failed, 250 passed, 3 skipped in 61.20s (0:01:01)\n", "1 failed, 250 passed, 3 skipped in 61.20s (0:01:01)"),
    ("x\n========== 2 passed in 0.1s ==========\n", "2 passed in 0.1s"),
    ("no tests ran in 0.01s\n", "no tests ran in 0.01s"),
    ("ImportError while loading conftest\n", ""),
])
def test_pytest_summary_line(output, line):
    assert newest.summary_line(output) == line


def test_both_tools_seed_with_the_cpu_torch_only():
    assert lock.SEED == "torch==2.13.*"
    assert newest.lock.SEED == lock.SEED
    assert newest.PYTEST[:2] == ["-m", "pytest"] and "-x" in newest.PYTEST
