"""Which files xopt wrote itself, so that re-running a command replaces them while a file it
did not write, or one edited since, is kept unless --force.

Each folder xopt writes outputs into (a report folder, a folder of stems, the folder of a
matte) holds `.xopt-written.json`: file name -> the sha256 of the bytes xopt wrote there.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

WRITTEN = ".xopt-written.json"


def recorded(folder: str | Path) -> dict:
    try:
        data = json.loads((Path(folder) / WRITTEN).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def ours(path: str | Path) -> bool:
    """A file xopt wrote itself (its sha256 is the one recorded when it was written), so a
    re-run may replace it; a file edited since, or never written by xopt, is not."""
    from xopt.hashing import sha256_file

    path = Path(path)
    sha = recorded(path.parent).get(path.name)
    return bool(sha) and path.is_file() and sha256_file(path) == sha


def may_replace(path: str | Path, force: bool = False) -> bool:
    """True when writing `path` replaces nothing the user owns: it does not exist, xopt wrote
    it, or `force`."""
    path = Path(path)
    return force or not path.exists() or ours(path)


def refuse_foreign(paths: Iterable[str | Path], force: bool, flag: str = "--out") -> None:
    """OutputExistsError for the first of `paths` that exists and that xopt did not write."""
    from xopt.errors import OutputExistsError

    for p in paths:
        if not may_replace(p, force):
            raise OutputExistsError(p, flag)


def record(paths: Iterable[str | Path]) -> None:
    """Remember the sha256 of `paths` (just written by xopt) in their folders' records."""
    from xopt.atomic import write_json
    from xopt.hashing import sha256_file

    by_folder: dict[Path, dict] = {}
    for p in map(Path, paths):
        if p.is_file():
            by_folder.setdefault(p.parent, {})[p.name] = sha256_file(p)
    for folder, new in by_folder.items():
        write_json(folder / WRITTEN, {**recorded(folder), **new}, force=True)
