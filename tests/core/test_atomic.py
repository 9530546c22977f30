import multiprocessing as mp
import os

import pytest

from xopt.atomic import atomic_path, dir_lock, write_text
from xopt.errors import OutputExistsError, UserError


def test_interrupted_write_leaves_nothing(tmp_path):
    dest = tmp_path / "a.onnx"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(dest) as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert not dest.exists() and os.listdir(tmp_path) == []


def test_existing_file_needs_force(tmp_path):
    dest = write_text(tmp_path / "x.txt", "user data")
    with pytest.raises(OutputExistsError, match="--force"):
        write_text(dest, "new")
    assert dest.read_text() == "user data"
    write_text(dest, "new", force=True)
    assert dest.read_text() == "new"


def test_directory_where_file_expected(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(UserError, match="is a directory"):
        write_text(tmp_path / "d", "x", force=True)


def _hold(directory, started, release):
    with dir_lock(directory):
        started.set()
        release.wait(10)


def test_second_writer_waits_for_the_lock(tmp_path):
    ctx = mp.get_context("spawn")
    started, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold, args=(str(tmp_path), started, release))
    p.start()
    try:
        assert started.wait(30)
        with pytest.raises(UserError, match="locked by another xopt process"):
            with dir_lock(tmp_path, timeout=0.2):
                pass
    finally:
        release.set()
        p.join(10)
    with dir_lock(tmp_path, timeout=1):
        pass


def test_killed_holder_leaves_no_stale_lock(tmp_path):
    ctx = mp.get_context("spawn")
    started, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold, args=(str(tmp_path), started, release))
    p.start()
    assert started.wait(30)
    p.kill()
    p.join(10)
    with dir_lock(tmp_path, timeout=2):
        pass
