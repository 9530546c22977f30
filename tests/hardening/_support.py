"""Shared by the hardening tests: run the real CLI (in this process or a child), and look at
the file system afterwards (what changed, what was left half-written)."""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from dataclasses import dataclass
from pathlib import Path

TESTS = str(Path(__file__).resolve().parents[1])
TOY = "from toy_model import ensure_registered; ensure_registered()"
OVERFLOW = "from hardening.overflow_model import ensure_registered; ensure_registered()"
# What an interrupted or failed write may leave behind if it is not cleaned up.
DEBRIS = (".partial", ".xopt-tmp-", ".old")


@dataclass
class Result:
    rc: int
    out: str
    err: str


def cli(*args) -> Result:
    """`xopt ARGS` through `xopt.cli.main` in this process (the fast path for most tests)."""
    from xopt.cli import main

    from unittest import mock

    out, err = io.StringIO(), io.StringIO()
    # rich sizes tables from COLUMNS; at its default 80 the cells fold mid-word
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            mock.patch.dict(os.environ, {"COLUMNS": "200"}):
        rc = main(["-q", *map(str, args)])
    return Result(rc, out.getvalue(), err.getvalue())


def cli_process(*args, setup: str = "", cwd=None, timeout: float = 300, popen: bool = False, prefix=()):
    """`xopt ARGS` in a child process, after `setup` (Python) ran there: for signals, resource
    limits and true concurrency. `popen` returns the running Popen instead of waiting; `prefix`
    runs the child through another command (e.g. `without_root_override()`)."""
    code = "\n".join([
        # Ctrl-C as at a terminal: a suite started in the background of a non-interactive shell
        # inherits SIGINT ignored, and Python then keeps ignoring it
        "import signal; signal.signal(signal.SIGINT, signal.default_int_handler)",
        "import sys",
        "import xopt.cli  # the installed package, before tests/ joins sys.path",
        f"sys.path.append({TESTS!r})",
        textwrap.dedent(setup),
        f"sys.exit(xopt.cli.main({['-q', *map(str, args)]!r}))",
    ])
    cmd = [*prefix, sys.executable, "-c", code]
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    if popen:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return Result(r.returncode, r.stdout, r.stderr)


def without_root_override() -> list[str]:
    """The command prefix under which permission bits apply: root (sessions and CI run as root)
    reads and writes through mode 000/555, unless the capabilities that override them are
    dropped (setpriv, from util-linux). Skips the test where that is not possible."""
    import shutil

    import pytest

    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv (util-linux): permission bits cannot be tested")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--"]


def assert_user_error(r: Result, *needles: str) -> str:
    """Exit code 1, one line on stderr naming the problem and the fix, no traceback."""
    lines = [line for line in r.err.splitlines() if line.strip()]
    assert r.rc == 1, (r.rc, r.err[-3000:])
    assert "Traceback" not in r.err, r.err[-3000:]
    assert len(lines) == 1, r.err
    line = lines[0]
    assert line.startswith("xopt: error: ") and "; " in line, line  # "problem; fix."
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def snapshot(root) -> dict[str, str]:
    """Relative path -> sha256 (files) or 'dir', for every entry under `root`."""
    root = Path(root)
    if not root.exists():
        return {}
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def debris(root) -> list[str]:
    root = Path(root)
    if not root.exists():
        return []
    return [str(p.relative_to(root)) for p in root.rglob("*") if any(d in p.name for d in DEBRIS)]


# ---------------------------------------------------------------- hand-made files

def png_bytes(width: int, height: int, bit_depth: int = 8, colour: int = 2, rows: bytes | None = None) -> bytes:
    """A PNG written by hand: bit depths and colour types PIL cannot write (48-bit RGB), or a
    header that promises more pixels than the data holds (`rows` given). Pixels are zero."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    if rows is None:
        row = b"\x00" + bytes((width * channels * bit_depth + 7) // 8)
        rows = row * height

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def png_from_array(a) -> bytes:
    """A PNG of a uint8/uint16 H x W (x 3 or 4) array, 16-bit ones at full depth."""
    import numpy as np

    a = np.asarray(a)
    bit_depth = 16 if a.dtype == np.uint16 else 8
    colour = {2: 0, 3: {3: 2, 4: 6}.get(a.shape[-1], 0)}[a.ndim]
    data = a.astype(">u2" if bit_depth == 16 else "u1")
    rows = b"".join(b"\x00" + data[y].tobytes() for y in range(a.shape[0]))
    return png_bytes(a.shape[1], a.shape[0], bit_depth, colour, rows)


def empty_video(path, codec: str = "ffv1", pix_fmt: str = "gray") -> Path:
    """A video container with a stream header and no frames."""
    import av

    c = av.open(str(path), "w")
    s = c.add_stream(codec, rate=25)
    s.width, s.height, s.pix_fmt = 64, 64, pix_fmt
    c.start_encoding()
    c.close()
    return Path(path)
