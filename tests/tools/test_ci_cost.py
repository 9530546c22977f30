"""tools/ci_cost.py: README's bounds for the test command are read, measured and enforced."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("ci_cost", ROOT / "tools" / "ci_cost.py")
ci_cost = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ci_cost)


def test_bounds_read_from_the_markers():
    text = "under <!-- measured: test_command_minutes -->60 min and <!--measured:test_command_peak_rss_gb--> 1.5 GB"
    assert ci_cost.bounds(text) == {"test_command_minutes": 3600.0, "test_command_peak_rss_gb": 1.5 * 2 ** 30}


def test_readme_states_both_bounds():
    assert set(ci_cost.bounds(ci_cost.README.read_text())) == {"test_command_minutes", "test_command_peak_rss_gb"}


def _ci_cost(readme: Path, *cmd: str) -> int:
    """The tool as .ci/run calls it, in a small process of its own: a forked child's ru_maxrss
    counts its parent's pages until exec, so from inside a large pytest process it would not."""
    return subprocess.run([sys.executable, str(ROOT / "tools" / "ci_cost.py"), "--readme", str(readme), "--", *cmd],
                          capture_output=True, text=True, timeout=120).returncode


def test_a_process_past_its_memory_bound_fails_with_4(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("<!-- measured: test_command_minutes -->5 min, <!-- measured: test_command_peak_rss_gb -->0.1 GB")
    grow = [sys.executable, "-c", "b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096])"]
    assert _ci_cost(readme, *grow) == ci_cost.EXCEEDED
    readme.write_text("<!-- measured: test_command_minutes -->5 min, <!-- measured: test_command_peak_rss_gb -->2 GB")
    assert _ci_cost(readme, *grow) == 0


def test_the_commands_own_failure_passes_through(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("")
    assert ci_cost.main(["--readme", str(readme), "--", sys.executable, "-c", "raise SystemExit(7)"]) == 7
    assert ci_cost.judge({"test_command_minutes": 60.0}, 61.0, 0) == ["took 1.0 min, README says under 1 min"]
