"""An output location that cannot be written is refused before any work, by every command that
writes: one line naming the folder and the fix, exit code 1, nothing left behind. The reported
cases: `xopt export modnet --out ro/a` and `xopt run modnet photo.png -o ro/m.png` gave
tracebacks, and `xopt profile ... --out ro/r` measured everything first and then died.

Sessions and CI run as root, which writes into a mode-555 folder: the commands run with the
capabilities that override permission bits dropped (setpriv; the tests skip without it)."""
from __future__ import annotations

import shutil

import pytest
from PIL import Image

from ._support import TOY, assert_user_error, cli_process, snapshot, without_root_override

pytest.importorskip("onnxruntime")


@pytest.fixture
def ro(tmp_path):
    """A read-only folder; made writable again afterwards so pytest can remove it."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    yield folder
    folder.chmod(0o755)


@pytest.fixture
def work(tmp_path, modnet_export, toy_export):
    """The inputs every command below needs, in a writable folder beside `ro`."""
    w = tmp_path / "work"
    (w / "frames").mkdir(parents=True)
    from xopt.models.modnet.pipeline import sample_images

    Image.fromarray(sample_images(1)[0][::8, ::8]).save(w / "photo.png")
    shutil.copy(w / "photo.png", w / "frames" / "a.png")
    shutil.copy(modnet_export / "modnet_fp32.onnx", w / "a.onnx")
    (w / "sweep.toml").write_text(f'[[job]]\nmodel = "modnet"\nvariants = ["fp32"]\nartifacts = "{modnet_export}"\n')
    (w / "data").mkdir()
    r = cli_process("profile", "toy", "--variants", "fp32", "--artifacts", toy_export, "--out", w / "rep",
                    "--frames", "1", "--no-e2e", setup=TOY)
    assert r.rc == 0, r.err
    return w


def _commands(ro, w, art):
    return {
        "export (new folder)": ["export", "modnet", "--out", ro / "a"],
        "export (the folder itself)": ["export", "modnet", "--out", ro],
        "run": ["run", "modnet", w / "photo.png", "-o", ro / "m.png", "--artifacts", art],
        "run (many files)": ["run", "modnet", w / "frames", "-o", ro / "mattes", "--artifacts", art],
        "run (an export it must make)": ["run", "modnet", w / "photo.png", "-o", w / "m.png", "--artifacts", ro / "art"],
        "profile": ["profile", "modnet", "--variants", "fp32", "--artifacts", art, "--out", ro / "r", "--frames", "1"],
        "bench": ["bench", "modnet", "--variants", "fp32", "--artifacts", art, "--out", ro / "b.json"],
        "eval": ["eval", "modnet", w / "data", "--out", ro / "e"],
        "fit": ["fit", "demucs", "--out", ro / "f"],
        "sweep": ["sweep", w / "sweep.toml", "--sequential", "--out", ro / "s"],
        "compare": ["compare", w / "a.onnx", w / "a.onnx", "--out", ro / "c"],
        "report": ["report", w / "rep" / "report.json", "--out", ro / "h"],
    }


CASES = ["export (new folder)", "export (the folder itself)", "run", "run (many files)", "run (an export it must make)",
         "profile", "bench", "eval", "fit", "sweep", "compare", "report"]


@pytest.mark.parametrize("case", CASES)
def test_an_unwritable_output_is_refused_first(case, ro, work, modnet_export, tmp_path):
    prefix = without_root_override()
    args = _commands(ro, work, modnet_export)[case]
    before, inputs = snapshot(ro), snapshot(work)
    r = cli_process(*args, cwd=work, prefix=prefix, setup=TOY)
    line = assert_user_error(r, f"{ro} is not writable (Permission denied)", "make that folder writable")
    flag = {"run": "-o/--output", "run (many files)": "-o/--output", "run (an export it must make)": "--artifacts"}
    assert f"choose a writable {flag.get(case, '--out')} or" in line, line
    assert snapshot(ro) == before and snapshot(work) == inputs  # nothing written, nothing measured into a log
    assert not (work / "artifacts").exists() and not (work / "reports").exists()


def test_the_check_leaves_nothing_in_a_writable_folder(tmp_path):
    """The probe it writes is removed: a writable --out sees no trace of the check."""
    from xopt.atomic import check_writable

    (tmp_path / "out").mkdir()
    assert check_writable(tmp_path / "out" / "new" / "deeper") == tmp_path / "out"
    assert check_writable(tmp_path / "out") == tmp_path / "out"
    assert list((tmp_path / "out").iterdir()) == [] and not (tmp_path / "out" / "new").exists()
