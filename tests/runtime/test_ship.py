"""Exports travel to nodes without a shared filesystem as one archive: unpacked into the node's
cache, checked against the manifest's sha256, reused when already there, refused when altered."""
from __future__ import annotations

import io
import tarfile

import pytest

from toy_model import ensure_registered
from xopt.errors import UserError
from xopt.runtime.ship import complete, pack, shas, unpack

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    from xopt.export.pipeline import export_model

    ensure_registered()
    out = tmp_path_factory.mktemp("art")
    export_model("toy", ["fp32", "int8"], out_dir=out)
    return out


def test_an_export_arrives_whole_and_is_reused(export, tmp_path):
    blob = pack(export)
    names = tarfile.open(fileobj=io.BytesIO(blob)).getnames()
    assert names[-1] == "manifest.json" and set(names) == {"manifest.json", "toy_fp32.onnx", "toy_int8.onnx"}
    there = unpack(blob, tmp_path / "cache")
    assert complete(there) and shas(there) == shas(export)
    assert unpack(blob, tmp_path / "cache") == there  # a second worker on the node finds it there
    from xopt.runtime import load

    with load(there, variant="int8") as s:  # and it loads like the original
        assert s.input_names == ["input"]


def test_an_altered_archive_is_refused_and_leaves_nothing(export, tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(pack(export))) as src, tarfile.open(fileobj=buf, mode="w") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read()
            if m.name == "toy_int8.onnx":
                data = data[:-7] + b"garbage"
            m.size = len(data)
            dst.addfile(m, io.BytesIO(data))
    with pytest.raises(UserError, match="sha256 differs"):
        unpack(buf.getvalue(), tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [".xopt.lock"]


def test_a_point_on_another_node_unpacks_the_shipped_export(export, tmp_path, monkeypatch):
    from xopt.analysis.sweep_ray import local_export

    monkeypatch.setenv("XOPT_CACHE_DIR", str(tmp_path / "node-cache"))
    info = {"dir": str(export), "sha256": shas(export)}
    assert local_export(info, fetch=lambda: pytest.fail("the same machine needs no copy")) == str(export)
    elsewhere = {"dir": str(tmp_path / "on-the-exporting-node"), "sha256": shas(export)}
    got = local_export(elsewhere, fetch=lambda: pack(export))
    assert got.startswith(str(tmp_path / "node-cache" / "sweep-shipped")) and shas(got) == shas(export)
