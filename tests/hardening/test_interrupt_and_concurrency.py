"""Ctrl-C and kill during an export, and two exports into one directory at once: no partial
artifact, no manifest naming a missing file, no stale lock, nobody's variants lost."""
from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from xopt.atomic import dir_lock
from xopt.hashing import sha256_file

from ._support import TOY, cli_process, debris, snapshot

pytest.importorskip("onnxruntime")
pytest.importorskip("torch")


def _start_and_signal(out: Path, sig: int, *flags: str):
    """Start `xopt export toy FLAGS --out OUT`, send `sig` once its work directory holds a file
    (the export is under way), and return the finished process's (rc, stderr)."""
    proc = cli_process("export", "toy", *flags, "--out", out, setup=TOY, popen=True)
    deadline = time.monotonic() + 120
    try:
        while not any(out.glob(".xopt-tmp-*/*")):
            assert proc.poll() is None, f"the export ended before it could be interrupted: {proc.communicate()}"
            assert time.monotonic() < deadline, "the export never started writing"
            time.sleep(0.005)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


def _lock_is_free(out: Path) -> None:
    with dir_lock(out, timeout=2):
        pass


def _manifest_matches_files(out: Path) -> dict:
    """The manifest parses, and every artifact it names exists with the recorded hash."""
    from xopt.manifest import load

    m = load(out)
    for v in m.variants:
        path = out / v["path"]
        assert path.is_file() and sha256_file(path) == v["sha256"], v["name"]
    assert not debris(out)
    return {v["name"]: v["sha256"] for v in m.variants}


def test_ctrl_c_during_a_new_export_leaves_nothing(tmp_path):
    out = tmp_path / "art"
    rc, err = _start_and_signal(out, signal.SIGINT, "--fp16", "--int8")
    assert rc == 130, err
    assert err.strip().splitlines()[-1] == "xopt: interrupted; nothing half-written was kept"
    assert not out.exists()  # no artifact, no manifest, no lock file, no directory
    _lock_is_free(out)


def test_ctrl_c_while_adding_a_variant_keeps_the_export_as_it_was(tmp_path):
    out = tmp_path / "art"
    assert cli_process("export", "toy", "--out", out, setup=TOY).rc == 0
    before = snapshot(out)
    rc, err = _start_and_signal(out, signal.SIGINT, "--int8")
    assert rc == 130, err
    assert snapshot(out) == before  # same manifest bytes, same fp32 artifact, no int8 file
    _lock_is_free(out)


def test_killed_export_leaves_no_stale_lock_and_its_debris_is_cleared_next_time(tmp_path):
    out = tmp_path / "art"
    rc, _ = _start_and_signal(out, signal.SIGKILL, "--int8")
    assert rc == -signal.SIGKILL
    assert not (out / "manifest.json").exists()  # the manifest is written last
    assert debris(out)  # a killed process cleans nothing up: its work directory is still there
    _lock_is_free(out)  # the kernel released the flock with the process
    assert cli_process("export", "toy", "--int8", "--out", out, setup=TOY).rc == 0
    assert set(_manifest_matches_files(out)) == {"fp32", "int8"}  # and no work directory left over


def test_two_exports_into_one_directory_at_once(tmp_path):
    """Each waits for the other's lock; the second reads the first's manifest and adds its own
    variant, so neither is lost and fp32 is built once."""
    out = tmp_path / "art"
    procs = [cli_process("export", "toy", flag, "--out", out, setup=TOY, popen=True) for flag in ("--fp16", "--int8")]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    hashes = _manifest_matches_files(out)
    assert set(hashes) == {"fp32", "fp16", "int8"}
    assert json.loads((out / "manifest.json").read_text())["model"] == "toy"
    # the same export twice at once: the later one finds everything up to date and changes nothing
    procs = [cli_process("export", "toy", "--fp16", "--out", out, setup=TOY, popen=True) for _ in range(2)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert _manifest_matches_files(out) == hashes
