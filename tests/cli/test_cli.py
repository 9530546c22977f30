import os
import subprocess
import sys
import textwrap

import pytest

COMMANDS = ["list", "profiles", "export", "profile", "run", "fit", "bench", "report"]
OPTIONAL = ["onnxruntime", "tensorrt", "tensorrt_rtx", "tensorflow", "tf2onnx", "openfold", "polygraphy",
            "demucs", "av", "soundfile", "museval"]


def xopt(*args, block=(), cwd=None):
    """Run the real CLI in a subprocess; `block` makes those modules unimportable, as if not installed."""
    prelude = textwrap.dedent(f"""
        import sys
        for name in {list(block)!r}:
            sys.modules[name] = None
        from xopt.cli import main
        sys.exit(main({list(args)!r}))
    """)
    return subprocess.run([sys.executable, "-c", prelude], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "COLUMNS": "200"}, timeout=300)


@pytest.mark.parametrize("command", [None] + COMMANDS)
def test_help_without_optional_extras(command):
    r = xopt(*([command] if command else []), "--help", block=OPTIONAL)
    assert r.returncode == 0, r.stderr
    assert "usage: xopt" in r.stdout


def test_list_without_extras_says_why_backends_do_not_work():
    r = xopt("list", block=OPTIONAL)
    assert r.returncode == 0, r.stderr
    assert "modnet" in r.stdout
    assert 'xopt[cpu]' in r.stdout  # ort-cpu: names the extra that installs onnxruntime


def test_list_and_profiles():
    r = xopt("list")
    assert r.returncode == 0 and "ort-cpu" in r.stdout and "fp16" in r.stdout
    r = xopt("profiles")
    assert r.returncode == 0 and "rtx3060-laptop-12gb (default)" in r.stdout


@pytest.mark.parametrize("args, needle", [
    (["export", "resnet"], "unknown model 'resnet'; choose one of:"),
    (["export", "modnet", "--variant", "int3"], "unknown variant"),
    (["export", "modnet", "--profile", "gtx480"], "unknown device profile 'gtx480'"),
    (["profile", "modnet", "--backend", "cuda9"], "unknown backend 'cuda9'"),
])
def test_bad_choices_are_one_line_errors(args, needle, tmp_path):
    r = xopt(*args, cwd=tmp_path)
    assert r.returncode == 1
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_export_help_shows_the_pass_options_of_that_model_with_its_defaults():
    r = xopt("export", "modnet", "--help")
    assert r.returncode == 0, r.stderr
    out = " ".join(r.stdout.split())
    assert "--int8-per-channel" in out and "--fp16-op-block-list" in out and "--engine-workspace-mb" in out
    assert "--fp16-gated-max-drop" not in out  # OpenFold's gated FP16: not a pass MODNet uses
    assert "modnet: int8-backbone='backbone'" in out  # the spec's own setting, per variant
    assert "--int8-gated-calib-samples" in out and "(default: 4; modnet: 8)" in out
    r = xopt("export", "demucs", "--help")
    out = " ".join(r.stdout.split())
    assert "--int8-gated-mode" in out and "demucs: int8='dynamic'" in out and "--int8-per-channel" not in out


def test_pass_flags_come_from_the_pass_registry():
    """A pass registered by anyone gets its CLI flags: nothing lists pass names by hand."""
    r = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        from xopt.optimize.base import Option, OptionSet, Pass, register_pass
        from xopt.cli import build_parser

        class Blur(Pass):
            name = "blur-test"
            options = OptionSet([Option("radius", "int", 3, "blur radius")])

        register_pass(Blur())
        args = build_parser(["export", "toy"]).parse_args(["export", "x", "--blur-test-radius", "5"])
        from xopt.cli.flags import pass_options
        print(pass_options(args))
    """)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "{'blur-test': {'radius': '5'}}" in r.stdout
