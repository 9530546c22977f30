"""The exporter checks every artifact it builds upon or keeps against the manifest's sha256
before any work, as the runtime does: the reported case built FP16 from an FP32 file whose
bytes had changed (exit 0, the manifest naming the old sha256), and a truncated FP32 file gave
a protobuf traceback. Now: one line naming the file and the fix, exit code 1, nothing changed."""
from __future__ import annotations

import json

import pytest

from ._support import assert_user_error, cli_process, debris, snapshot

pytest.importorskip("onnxruntime")


def _flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 3])


def _empty(path):
    path.write_bytes(b"")


@pytest.mark.parametrize("damage, needle", [
    (_flip_a_byte, "changed since it was exported (sha256 differs from the manifest)"),
    (_truncate, "changed since it was exported (sha256 differs from the manifest)"),
    (_empty, "is empty"),
    (lambda p: p.unlink(), "is missing"),
])
def test_fp16_is_not_built_on_a_changed_fp32(damage, needle, modnet_copy):
    fp32 = modnet_copy / "modnet_fp32.onnx"
    damage(fp32)
    before = snapshot(modnet_copy)
    r = cli_process("export", "modnet", "--fp16", "--out", modnet_copy)
    line = assert_user_error(r, needle, "re-run xopt export with --force")
    assert "modnet_fp32.onnx" in line and "Traceback" not in r.err
    assert snapshot(modnet_copy) == before and not debris(modnet_copy)  # no FP16, the manifest as it was


def test_a_kept_variant_is_checked_too(modnet_copy):
    """Nothing to build (FP32 is up to date): the export still does not call a changed file kept."""
    _flip_a_byte(modnet_copy / "modnet_fp32.onnx")
    r = cli_process("export", "modnet", "--out", modnet_copy)
    assert_user_error(r, "modnet_fp32.onnx changed since it was exported", "--force")


def test_force_rebuilds_it(modnet_copy):
    fp32 = modnet_copy / "modnet_fp32.onnx"
    _truncate(fp32)
    r = cli_process("export", "modnet", "--out", modnet_copy, "--force")
    assert r.rc == 0, r.err
    from xopt.hashing import sha256_file

    manifest = json.loads((modnet_copy / "manifest.json").read_text())
    assert manifest["variants"][0]["sha256"] == sha256_file(fp32)
