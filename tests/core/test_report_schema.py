"""What a written report may say about the machine that made it: no checkpoint location, and a
command line without this folder or the home folder."""
from __future__ import annotations

import subprocess
from pathlib import Path

from xopt.report_schema import _portable, public


def test_public_names_a_checkpoint_by_its_file_and_keeps_the_rest():
    report = {"weights": {"kind": "checkpoint", "path": "/srv/models/modnet.ckpt", "sha256": "ab"}, "results": [1]}
    out = public(report)
    assert out["weights"] == {"kind": "checkpoint", "path": "modnet.ckpt", "sha256": "ab"}
    assert out["results"] == [1] and report["weights"]["path"] == "/srv/models/modnet.ckpt"  # input untouched


def test_command_line_loses_this_folder_and_home_but_not_lookalikes():
    cmd = "xopt profile modnet --out /h/u/w/r --inputs /h/u/w --checkpoint /h/u/a.ckpt --x /h/u/wx /h/uv"
    assert _portable(cmd, "/h/u/w", "/h/u") == (
        "xopt profile modnet --out ./r --inputs . --checkpoint ~/a.ckpt --x ~/wx /h/uv")
    assert _portable("xopt bench modnet", "/", "/") == "xopt bench modnet"


def test_committed_files_carry_no_path_of_the_machine_that_made_them():
    root = Path(__file__).resolve().parents[2]
    files = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True).stdout.split()
    if not files:  # not a git checkout (an sdist): nothing to hold to this
        return
    bad = []
    for name in files:
        if name.startswith("tests/models/openfold/build_logs/"):  # compiler logs of another machine, kept verbatim
            continue
        p = root / name
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for marker in ("/work/", "/root/"):
            if marker in text and name != "tests/core/test_report_schema.py":
                bad.append(f"{name}: {marker}")
    assert not bad, bad
