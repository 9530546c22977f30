"""Outputs that exist are refused without --force (run, profile, export, bench), before any
work is done, and the user's file is left byte for byte; unknown names list the choices."""
from __future__ import annotations

import pytest
from PIL import Image

from ._support import TOY, assert_user_error, cli, cli_process, debris, snapshot

pytest.importorskip("onnxruntime")


@pytest.fixture
def photo(tmp_path):
    from xopt.models.modnet.pipeline import sample_images

    path = tmp_path / "photo.png"
    Image.fromarray(sample_images(1)[0][::8, ::8]).save(path)
    return path


def test_run_refuses_an_existing_output(modnet_export, photo, tmp_path):
    mine = tmp_path / "matte.png"
    mine.write_bytes(b"the user's own file")
    r = cli("run", "modnet", photo, "-o", mine, "--artifacts", modnet_export)
    assert_user_error(r, "matte.png already exists", "pass --force")
    assert mine.read_bytes() == b"the user's own file"
    r = cli("run", "modnet", photo, "-o", mine, "--artifacts", modnet_export, "--force")
    assert r.rc == 0, r.err
    with Image.open(mine) as m:
        assert m.mode == "L" and m.size == (64, 64)
    assert not debris(tmp_path)


def test_run_never_writes_over_its_input(modnet_export, photo, tmp_path):
    before = photo.read_bytes()
    for out in (photo, tmp_path):  # the file itself, or its directory (the matte would be photo.png there)
        r = cli("run", "modnet", photo, "-o", out, "--artifacts", modnet_export, "--force")
        assert_user_error(r, "input")
        assert photo.read_bytes() == before


def test_profile_refuses_any_existing_report_file(toy_export, tmp_path):
    rep = tmp_path / "rep"
    rep.mkdir()
    (rep / "report.md").write_text("the user's notes")  # no report.json: report.md alone is the user's file
    args = ("profile", "toy", "--variants", "fp32", "--artifacts", toy_export, "--out", rep, "--frames", "1",
            "--no-e2e")
    r = cli_process(*args, setup=TOY)
    assert_user_error(r, "report.md already exists", "pass --force")
    assert snapshot(rep) == {"report.md": snapshot(rep)["report.md"]} and (rep / "report.md").read_text() == \
        "the user's notes"
    r = cli_process(*args, "--force", setup=TOY)
    assert r.rc == 0, r.err
    assert {"report.json", "report.md", "report.html"} <= set(snapshot(rep))


def test_export_refuses_a_foreign_file_and_other_weights(tmp_path):
    out = tmp_path / "art"
    out.mkdir()
    (out / "toy_fp32.onnx").write_bytes(b"not ours")
    r = cli_process("export", "toy", "--out", out, setup=TOY)
    assert_user_error(r, "toy_fp32.onnx already exists", "pass --force")
    assert snapshot(out) == {"toy_fp32.onnx": snapshot(out)["toy_fp32.onnx"]}  # nothing added, not even a lock
    r = cli_process("export", "toy", "--out", out, "--force", setup=TOY)
    assert r.rc == 0, r.err
    before = snapshot(out)
    r = cli_process("export", "toy", "--out", out, "--seed", "7", setup=TOY)
    assert_user_error(r, "was exported with other weights", "pass --force to rebuild every artifact")
    assert snapshot(out) == before
    assert cli_process("export", "toy", "--out", out, setup=TOY).rc == 0  # the same request: up to date, kept
    after = snapshot(out)
    new = sorted(set(after) - set(before))
    assert len(new) == 1 and new[0].startswith("logs/export-")  # only the run's own log is new
    assert {k: v for k, v in after.items() if k not in new} == before


def test_bench_refuses_an_existing_output_before_benchmarking(tmp_path):
    mine = tmp_path / "bench.json"
    mine.write_text("{}")
    r = cli("bench", "modnet", "--artifacts", tmp_path / "nothing-here", "--out", mine)
    assert_user_error(r, "bench.json already exists", "pass --force")
    assert mine.read_text() == "{}" and not (tmp_path / "nothing-here").exists()


@pytest.mark.parametrize("args, needle", [
    (["run", "modnet", "{photo}", "-o", "m.png", "--artifacts", "{art}", "--variant", "int3"],
     "unknown variant for modnet 'int3' (did you mean 'int8'?); choose one of: fp16, fp32, int8"),
    (["run", "modnet", "{photo}", "-o", "m.png", "--artifacts", "{art}", "--backend", "cuda9"],
     "unknown backend 'cuda9'; choose one of:"),
    (["run", "resnet", "{photo}", "-o", "m.png"], "unknown model 'resnet'; choose one of:"),
    (["profile", "modnet", "--variants", "fp32,int3", "--artifacts", "{art}"], "unknown variant for modnet 'int3'"),
    (["profile", "modnet", "--variants", "fp32", "--profile", "gtx480", "--artifacts", "{art}"],
     "unknown device profile 'gtx480'; choose one of: cpu, rtx3060-laptop-12gb"),
    (["fit", "resnet"], "unknown model 'resnet'"),
])
def test_unknown_names_list_the_choices(args, needle, modnet_export, photo, tmp_path):
    fill = {"photo": photo, "art": modnet_export}
    r = cli(*[a.format(**fill) for a in args])
    line = assert_user_error(r, needle.format(**fill))
    assert "choose one of:" in line
    assert not (tmp_path / "m.png").exists()


def test_artifacts_of_another_model_are_named(modnet_export, photo, tmp_path):
    from toy_model import ensure_registered

    ensure_registered()
    for args in (["run", "toy", photo, "-o", tmp_path / "m.png"],
                 ["profile", "toy", "--variants", "fp32", "--out", tmp_path / "rep", "--frames", "1"]):
        r = cli(*args, "--artifacts", modnet_export)
        assert_user_error(r, "holds a modnet export, not toy", "pass --artifacts of a toy export")
    assert not (tmp_path / "m.png").exists() and not (tmp_path / "rep").exists()


def test_a_directory_or_a_file_where_the_other_is_expected(modnet_export, toy_export, photo, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("the user's file")
    cases = [
        # (a directory as the input is a batch run over its files since `xopt run DIR`: tests/runtime)
        (["run", "modnet", photo, "-o", a_file / "m.png", "--artifacts", modnet_export], "a-file is a file"),
        (["run", "modnet", photo, "-o", a_file / "frames" / "x.png", "--artifacts", modnet_export], "a-file is a file"),
        (["export", "modnet", "--out", a_file], "a-file is a file; pass a directory to --out"),
        (["profile", "toy", "--variants", "fp32", "--artifacts", toy_export, "--out", a_file], "a-file is a file"),
        (["run", "modnet", photo, "-o", tmp_path / "m.png", "--artifacts", a_file], "a-file"),
    ]
    from toy_model import ensure_registered

    ensure_registered()
    for args, needle in cases:
        assert_user_error(cli(*args), needle)
    assert a_file.read_text() == "the user's file" and not (tmp_path / "m.png").exists()
