"""SWEEP.toml: the matrix it expands to, shared exports, and one-line errors for bad files."""
from __future__ import annotations

import textwrap

import pytest

from toy_model import ensure_registered
from xopt.analysis.sweep_file import load
from xopt.errors import UserError


@pytest.fixture(autouse=True)
def _toy():
    ensure_registered()


def _write(tmp_path, text: str):
    p = tmp_path / "sweep.toml"
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


def test_jobs_expand_to_points_and_share_exports(tmp_path):
    sweep = load(_write(tmp_path, """
        [sweep]
        frames = 4
        [[job]]
        model = "toy"
        variants = ["fp32", "fp16", "int8"]
        backends = ["ort-cpu"]
        profiles = ["cpu", "rtx3060-laptop-12gb"]
        shapes = [{ height = 32, width = 32 }, { height = 64, width = 48 }]
        [[job]]
        model = "toy"
        variant = "fp16"
        profile = "cpu"
        shapes = [{ height = 32, width = 32 }]   # the same point as job 1's: measured once
        frames = 4
        [[job]]
        model = "toy"
        variant = "fp32"
        config = "wide"
    """))
    assert len(sweep.points) == 3 * 2 * 2 + 1  # job 2 adds nothing new; job 3 one point at the profile's size
    assert {p.settings_dict()["frames"] for p in sweep.points} == {4}
    assert sweep.points[0].shape_dict() == {"height": 32, "width": 32}
    # jobs 1 and 2 share one export (default config); job 3's wide config is a recipe of its own
    assert len(sweep.recipes) == 2
    default = next(v for r, v in sweep.recipes.values() if r.config is None)
    assert default == ["fp32", "fp16", "int8"]
    wide = next(p for p in sweep.points if p.recipe.config == "wide")
    assert wide.shape == () and wide.shape_text() == "profile default"


@pytest.mark.parametrize("body, message", [
    ('model = "toy"\nvariants = ["fp32"]\nbackedn = "ort-cpu"', "unknown key 'backedn' (did you mean 'backend'?)"),
    ('model = "toy"\nvariants = ["fp64"]', "unknown variant for toy 'fp64'"),
    ('model = "toyy"\nvariants = ["fp32"]', "unknown model 'toyy'"),
    ('variants = ["fp32"]', "'model' is missing"),
    ('model = "toy"', "no variants"),
    ('model = "toy"\nvariants = ["fp32"]\nbackend = "ort-cpu"\nbackends = ["ort-cpu"]', "both 'backend' and 'backends'"),
    ('model = "toy"\nvariants = ["fp32"]\nbackend = "cuda"', "unknown backend 'cuda'"),
    ('model = "toy"\nvariants = ["fp32"]\nprofile = "rtx4090"', "unknown device profile 'rtx4090'"),
    ('model = "toy"\nvariants = ["fp32"]\nshapes = [{ heigth = 32 }]', "'heigth' is not an input size of toy (did you mean 'height'?)"),
    ('model = "toy"\nvariants = ["fp32"]\nshapes = [{ height = -32 }]', "height = -32 is not a positive int"),
    ('model = "toy"\nvariants = ["fp32"]\nshapes = [{ height = 31.5 }]', "is not a positive int"),
    ('model = "toy"\nvariants = ["fp32"]\nframes = 0', "frames = 0 must be an integer >= 1"),
    ('model = "toy"\nvariants = ["fp16"]\nbackend = "torch"', "the torch backend runs the FP32 PyTorch model only"),
    ('model = "toy"\nvariants = ["fp32"]\ncheckpoint = "missing.pt"', "does not exist"),
])
def test_bad_jobs_are_one_line_errors_naming_the_job(tmp_path, body, message):
    with pytest.raises(UserError) as err:
        load(_write(tmp_path, "[[job]]\n" + body + "\n"))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_bad_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load(tmp_path / "nope.toml")
    with pytest.raises(UserError, match="not valid TOML"):
        load(_write(tmp_path, "[[job]\nmodel = 'toy'\n"))
    with pytest.raises(UserError, match=r"no \[\[job\]\] tables"):
        load(_write(tmp_path, "[sweep]\nframes = 3\n"))
    with pytest.raises(UserError, match="unknown key"):
        load(_write(tmp_path, "[[jobs]]\nmodel = 'toy'\n"))
    with pytest.raises(UserError, match=r"\[sweep\]: only"):
        load(_write(tmp_path, "[sweep]\nmodel = 'toy'\n[[job]]\nmodel = 'toy'\nvariants = ['fp32']\n"))


def test_the_documented_sweep_file_is_valid():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "commands" / "sweep.md").read_text(encoding="utf-8")
    block = text.split("## The sweep file", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "matrix.toml"
        p.write_text(block, encoding="utf-8")
        sweep = load(p)
    assert len(sweep.points) == 3 * 2 + 2 and len(sweep.recipes) == 2
    demucs = next(p for p in sweep.points if p.model == "demucs")
    assert demucs.shape_dict() == {"segment_request": 0.5, "batch": 2}
