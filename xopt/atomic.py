"""Crash-safe writes: temporary name, fsync, rename; and a lock per output directory.

An interrupted export must leave either the old file or the new one, never a torn one,
and two exports into one directory must not interleave their manifests.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from xopt.errors import OutputExistsError, UserError

LOCK_NAME = ".xopt.lock"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _disk_error(exc: OSError, path: Path) -> UserError | OSError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return UserError(f"no space left on the disk while writing {path}", "free some space or choose another --out")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return UserError(f"cannot write {path} ({exc.strerror})", "choose a writable --out directory")
    return exc


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; on success it is fsynced and renamed onto `dest`.

    On any exception (KeyboardInterrupt included) the temporary file is removed.
    """
    dest = Path(dest)
    if dest.exists() and not force:
        raise OutputExistsError(dest)
    if dest.is_dir():
        raise UserError(f"{dest} is a directory", "pass a file path")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, dest)
        _fsync_dir(dest.parent)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        err = _disk_error(exc, dest)
        if err is exc:
            raise
        raise err from exc
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes(dest, data: bytes, force: bool = False) -> Path:
    with atomic_path(dest, force=force) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def write_text(dest, text: str, force: bool = False) -> Path:
    return write_bytes(dest, text.encode("utf-8"), force=force)


def write_json(dest, obj, force: bool = False) -> Path:
    return write_text(dest, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n", force=force)


def copy_file(src, dest, force: bool = False) -> Path:
    with atomic_path(dest, force=force) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dest)


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


@contextlib.contextmanager
def dir_lock(directory: str | os.PathLike, timeout: float = 600.0) -> Iterator[None]:
    """Hold an exclusive lock on `directory` (created if needed) while writing into it.

    filelock uses flock(2), which the kernel releases when the process dies, so a
    Ctrl-C or a crash never leaves a stale lock behind.
    """
    from filelock import FileLock, Timeout

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(directory / LOCK_NAME))
    try:
        lock.acquire(timeout=timeout)
    except Timeout as exc:
        raise UserError(
            f"{directory} is locked by another xopt process", "wait for it to finish or use another --out"
        ) from exc
    try:
        yield
    finally:
        lock.release()
