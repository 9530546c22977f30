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
import time
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


# EFBIG (a file-size limit: RLIMIT_FSIZE, a FAT32 volume, a quota on one file) leaves the same
# torn file behind as a full disk, and the user's fix is the same: room elsewhere.
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def is_disk_full(exc: BaseException) -> bool:
    """True for an OSError that means "no room to write": disk full, quota, file too large."""
    return isinstance(exc, OSError) and exc.errno in _NO_ROOM


def write_error(exc: OSError, path: Path) -> UserError | OSError:
    """The UserError for a failed write the user can fix (no room, no permission), else `exc`."""
    if is_disk_full(exc):
        return UserError(f"no room left to write {path} ({exc.strerror})",
                         "free some space (or raise the file-size limit) or choose another --out")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return UserError(f"cannot write {path} ({exc.strerror})", "choose a writable --out directory")
    return exc


def _nearest_existing(path: Path) -> Path:
    for d in [path, *path.parents]:
        if d.exists():
            return d
    return Path.cwd()  # unreachable for a real path: "/" (or ".") exists


def check_writable(target: str | os.PathLike, flag: str = "--out") -> Path:
    """Refuse, before any work, an output location this process cannot write into.

    `target` is the directory or file a command will write (it need not exist yet): the
    folder tested is `target` itself when it is an existing directory, else the nearest
    existing folder above it, where the missing ones would be made. The test creates a
    child there and removes it at once: permission bits say nothing when running as root,
    and nothing else knows about read-only mounts, ACLs or quotas. Returns the folder tested.
    """
    target = Path(target)
    where = _nearest_existing(target)
    if where.exists() and not where.is_dir():
        if where == target:  # an existing file to be replaced: its folder gets the new one
            where = where.parent
        else:
            raise UserError(f"{where} is a file, so {target} cannot be written", f"choose another {flag}")
    try:
        probe = tempfile.mkdtemp(prefix=".xopt-write-test-", dir=where)
    except OSError as exc:
        raise _unwritable(where, target, exc, flag) from exc
    with contextlib.suppress(OSError):
        os.rmdir(probe)
    return where


def _unwritable(where: Path, target: Path, exc: OSError, flag: str) -> UserError:
    lead = "" if where == target else f"cannot write {target}: "
    if is_disk_full(exc):
        return UserError(f"{lead}{where} has no room left ({exc.strerror})", f"free some space or choose another {flag}")
    return UserError(f"{lead}{where} is not writable ({exc.strerror or exc})",
                     f"choose a writable {flag} or make that folder writable")


def ensure_parent(dest: Path) -> None:
    """Create `dest`'s directory; a file where a directory is needed is a UserError."""
    blocking = next((d for d in dest.parents if d.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise UserError(f"{blocking} is a file, so {dest} cannot be written", "choose another output path")
    dest.parent.mkdir(parents=True, exist_ok=True)


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
    ensure_parent(dest)
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
        err = write_error(exc, dest)
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


def dumps(obj) -> str:
    """The JSON text `write_json` writes (numpy scalars/arrays and paths allowed)."""
    return json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"


def write_json(dest, obj, force: bool = False) -> Path:
    return write_text(dest, dumps(obj), force=force)


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


def _missing_ancestors(directory: Path) -> list[Path]:
    """`directory` and those of its parents that do not exist yet, deepest first."""
    missing = []
    for d in [directory, *directory.parents]:
        if d.exists():
            break
        missing.append(d)
    return missing


def _names(directory: Path) -> set[str] | None:
    try:
        return {p.name for p in directory.iterdir()} - {LOCK_NAME}
    except OSError:
        return None


@contextlib.contextmanager
def dir_lock(directory: str | os.PathLike, timeout: float = 600.0, tidy: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on `directory` (created if needed) while writing into it.

    filelock uses flock(2), which the kernel releases when the process dies, so a
    Ctrl-C or a crash never leaves a stale lock behind.

    `tidy`: when the block wrote nothing there (it failed or was interrupted first), leave
    `directory` as it was found: the lock file this call created is removed, and so is the
    directory (with any parents) if this call created it.
    """
    from filelock import FileLock, Timeout

    directory = Path(directory)
    lock_path = directory / LOCK_NAME
    created = _missing_ancestors(directory) if tidy else []
    # None: nothing to tidy (not asked, or another xopt run already made the lock file here)
    before = set() if created else (_names(directory) if tidy and not lock_path.exists() else None)
    lock = FileLock(str(lock_path))
    deadline = time.monotonic() + timeout
    while True:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            lock.acquire(timeout=max(0.0, deadline - time.monotonic()))
            break
        except Timeout as exc:
            raise UserError(
                f"{directory} is locked by another xopt process", "wait for it to finish or use another --out"
            ) from exc
        except FileNotFoundError:
            # A tidying holder removed the directory while we waited for its lock: recreate it and retry.
            if time.monotonic() >= deadline:
                raise
        except OSError as exc:  # a read-only folder (or mount), or no room for the lock file
            if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, *_NO_ROOM):
                raise
            raise _unwritable(_nearest_existing(directory), directory, exc, "--out") from exc
    try:
        yield
    finally:
        try:
            if before is not None and _names(directory) == before:
                # Unlinked while still held: filelock (>= 4.2) waiters notice the dead inode
                # (st_nlink 0) and retry; one that finds the directory gone recreates it (above).
                with contextlib.suppress(OSError):
                    lock_path.unlink()
                for d in created:
                    with contextlib.suppress(OSError):  # not empty (another process wrote there): keep it
                        d.rmdir()
        finally:
            lock.release()
