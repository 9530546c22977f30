"""The terminal tells the truth, through the real CLI: an INT8 export shows only xopt's own lines
(progress within 2 s of a step starting, when piped) and keeps the quantizer's warnings in its own
log; no flag is taken for an abbreviation of another; a misspelt flag gets the command's usage and
a suggestion; `xopt run` says what ran; a piped table fits 80 columns."""
from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hardening._support import cli

pytest.importorskip("onnxruntime")

REPO = Path(__file__).resolve().parents[2]
LOG_NAME = re.compile(r"^export-\d{8}-\d{6}-(\d+)\.log$")


def _xopt_piped(*args, cwd=None, timeout=600) -> tuple[int, list[tuple[float, str]], str]:
    """`xopt ARGS` in a child whose stdout and stderr are pipes (as in CI, not a terminal):
    (exit code, stderr lines with the seconds since start, stdout)."""
    env = {**os.environ, "COLUMNS": "80", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "xopt.cli", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0, lines = time.monotonic(), []
    assert proc.stderr is not None and proc.stdout is not None
    for line in proc.stderr:
        lines.append((time.monotonic() - t0, line.rstrip("\n")))
    out = proc.stdout.read()
    return proc.wait(timeout=timeout), lines, out


@pytest.fixture(scope="module")
def int8_export(tmp_path_factory):
    """`xopt export modnet --variant int8-all` (ONNX Runtime's static quantizer, ~20 s) into a
    copy of an FP32 export, piped."""
    pytest.importorskip("torch")
    from xopt.export.pipeline import export_model

    art = tmp_path_factory.mktemp("modnet-int8") / "art"
    export_model("modnet", ["fp32"], out_dir=art)
    shutil.rmtree(art / "logs", ignore_errors=True)
    rc, err, out = _xopt_piped("export", "modnet", "--variant", "int8-all", "--out", art)
    assert rc == 0, "\n".join(t for _, t in err)
    return art, err, out


def test_an_int8_export_prints_only_xopts_own_lines(int8_export):
    art, err, out = int8_export
    ours = ("✓ ", "… ", "log: ")  # progress lines and the log line, nothing else on stderr
    assert all(t.startswith(ours) for _, t in err), [t for _, t in err if not t.startswith(ours)]
    text = out + "\n".join(t for _, t in err)
    for chatter in ("WARNING", "Warning", "pre-processing", "Axis 1", "onnxruntime", "[torch.onnx]"):
        assert chatter not in text, chatter
    assert "modnet_int8-all.onnx" in out and "│" in out  # the table fits 80 columns: nothing folded
    assert max(len(line) for line in out.splitlines()) <= 80


def test_the_run_keeps_its_own_log_beside_the_artifacts_and_names_it(int8_export):
    art, err, _ = int8_export
    (log,) = (art / "logs").iterdir()  # one run, one log: never a shared file emptied by the next run
    assert LOG_NAME.match(log.name)
    text = log.read_text()
    assert "xopt export modnet --variant int8-all" in text.splitlines()[1]
    assert "WARNING:root:" in text  # ONNX Runtime's quantizer said its piece there
    last = err[-1][1]
    assert last.startswith(f"log: {art / 'logs' / log.name} (") and "lines of third-party output)" in last


def test_progress_shows_within_two_seconds_of_a_step_starting(int8_export):
    _, err, _ = int8_export
    lines = [(t, s) for t, s in err if s.startswith(("✓ ", "… "))]
    for i, (t, s) in enumerate(lines):
        m = re.match(r"✓ (.*) (\d+\.\d) s", s)
        if not m or float(m.group(2)) < 2.0 or i == 0:
            continue
        start = max(j for j in range(i) if lines[j][1] == f"… {m.group(1)}")  # its start line came first
        if start:  # ... at most 2 s after the line before it (the end of the step before)
            assert lines[start][0] - lines[start - 1][0] < 2.0, (lines[start - 1], lines[start])
    assert any(s.startswith("… modnet int8-all: pass int8") for _, s in lines)


def test_no_flag_is_an_abbreviation_of_another():
    from xopt.cli import build_parser

    parser = build_parser([])
    assert not parser.allow_abbrev and all(not p.allow_abbrev for p in parser.commands.values())
    for path in [*REPO.glob("tools/*.py"), *REPO.glob("models/*/*.py")]:  # every parser of the project
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "ArgumentParser":
                assert any(k.arg == "allow_abbrev" for k in node.keywords), path


def test_a_prefix_is_an_error_with_the_commands_usage(tmp_path):
    r = subprocess.run([sys.executable, "-m", "xopt.cli", "profile", "modnet", "--variant", "fp16", "--out",
                        str(tmp_path / "rep")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.startswith("usage: xopt profile ")
    assert r.stderr.splitlines()[-1] == ("xopt profile: error: unrecognized arguments: --variant fp16 "
                                         "(did you mean --variants?)")
    assert not (tmp_path / "rep").exists()  # nothing measured, nothing written


@pytest.mark.parametrize("args, usage, hint", [
    (["export", "modnet", "--fp17"], "usage: xopt export [options] model", "(did you mean --fp16?)"),
    (["export", "modnet", "--int-8", "--forse"], "usage: xopt export", "--int-8: did you mean --int8?; "
                                                                      "--forse: did you mean --force?"),
    (["exprt", "modnet"], "usage: xopt [-h]", "did you mean 'export'?"),
])
def test_a_misspelt_flag_gets_a_suggestion_and_exit_2(args, usage, hint):
    r = subprocess.run([sys.executable, "-m", "xopt.cli", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith(usage) and hint in r.stderr.splitlines()[-1], r.stderr
    assert len(r.stderr.splitlines()) <= 10  # the usage, not 50 lines of pass options


def test_run_says_which_variant_backend_and_weights_ran(int8_export, tmp_path):
    modnet_copy = shutil.copytree(int8_export[0], tmp_path / "art", ignore=shutil.ignore_patterns("logs"))
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(photo)
    r = cli("run", "modnet", photo, "-o", tmp_path / "m.png", "--artifacts", modnet_copy)
    assert r.rc == 0, r.err
    assert (f"ran modnet fp32 on ort-cpu from {modnet_copy}, seeded-random weights (seed 0): not a trained "
            "model's output") in r.err
    (log,) = (modnet_copy / "logs").glob("run-*.log")
    assert f"log: {log}" in r.err
    again = cli("run", "modnet", photo, "-o", tmp_path / "m.png", "--artifacts", modnet_copy)
    assert again.rc == 0, again.err  # its own matte is replaced, as a report is
    assert len(list((modnet_copy / "logs").glob("run-*.log"))) == 2  # one log per run


def test_tables_fit_80_columns_when_piped():
    r = subprocess.run([sys.executable, "-m", "xopt.cli", "profiles"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "COLUMNS": "80"})
    assert r.returncode == 0, r.stderr
    assert max(len(line) for line in r.stdout.splitlines()) <= 80
    assert "budget MB: 10,445" in r.stdout  # thousands separators, never 1.044e+04


def test_parser_class_is_used_for_every_command():
    from xopt.cli import Parser, build_parser

    assert all(isinstance(p, Parser) and isinstance(p, argparse.ArgumentParser)
               for p in build_parser([]).commands.values())
