"""Move an export directory to another machine: its manifest and every artifact it names, as
one tar archive in memory (what Ray's object store carries), unpacked into that machine's cache
and checked against the manifest's sha256 before anything loads it."""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import tempfile
from pathlib import Path

from xopt.errors import UserError


def _members(manifest) -> list[str]:
    names = []
    for v in manifest.variants:
        names.append(v["path"])
        names += [e["path"] for e in v.get("engines") or []]
    return sorted(set(names))


def pack(export_dir: str | Path) -> bytes:
    """The export in `export_dir` (manifest.json and the artifacts it lists) as tar bytes."""
    from xopt.manifest import MANIFEST_NAME
    from xopt.manifest import load as load_manifest

    export_dir = Path(export_dir)
    manifest = load_manifest(export_dir)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for rel in _members(manifest):
            if (export_dir / rel).is_file():
                tar.add(export_dir / rel, arcname=rel, recursive=False)
        tar.add(export_dir / MANIFEST_NAME, arcname=MANIFEST_NAME, recursive=False)  # last, as on disk
    return buf.getvalue()


def digest(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()[:16]


def complete(directory: Path) -> bool:
    """Every artifact the manifest lists is there with its recorded sha256."""
    from xopt.hashing import sha256_file
    from xopt.manifest import MANIFEST_NAME
    from xopt.manifest import load as load_manifest

    if not (directory / MANIFEST_NAME).is_file():
        return False
    manifest = load_manifest(directory)
    return all((directory / v["path"]).is_file() and sha256_file(directory / v["path"]) == v["sha256"]
               for v in manifest.variants)


def unpack(blob: bytes, root: str | Path) -> Path:
    """`blob` (from `pack`) as a directory under `root`, named by its digest; reused when a
    complete copy is already there (another worker on this machine unpacked it first)."""
    from xopt.atomic import dir_lock

    root = Path(root)
    dest = root / digest(blob)
    with dir_lock(root):
        if complete(dest):
            return dest
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=root))
        try:
            with tarfile.open(fileobj=io.BytesIO(blob), mode="r") as tar:
                tar.extractall(tmp, filter="data")  # no absolute paths, links or device files
            if not complete(tmp):
                raise UserError("a shipped export arrived incomplete or changed (sha256 differs from its manifest)",
                                "re-run; if it persists, re-export with xopt export --force")
            if dest.exists():
                shutil.rmtree(dest)
            tmp.rename(dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def shas(export_dir: str | Path) -> dict[str, str]:
    """{variant: sha256} of the export in `export_dir`."""
    data = json.loads((Path(export_dir) / "manifest.json").read_text(encoding="utf-8"))
    return {v["name"]: v["sha256"] for v in data["variants"]}
