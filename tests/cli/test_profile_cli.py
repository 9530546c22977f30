"""`xopt profile` and `xopt report` as a deployment engineer uses them: re-runnable, arguments
checked first, what was measured recorded, honest verdicts, a regression gate with an exit code."""
from __future__ import annotations

import json
import os

import pytest

from hardening._support import assert_user_error, cli

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def toy():
    pytest.importorskip("torch")
    from toy_model import ensure_registered

    return ensure_registered()


@pytest.fixture(scope="module")
def profiled(toy, tmp_path_factory):
    """One profile of three toy variants (each in its own process), shared by the tests below."""
    root = tmp_path_factory.mktemp("prof")
    r = cli("profile", "toy", "--variants", "fp32,fp16,int8", "--artifacts", root / "art", "--out", root / "rep",
            "--frames", "4", "--threads", "1", "--height", "40", "--width", "24")
    assert r.rc == 0, r.err
    return root, r, json.loads((root / "rep" / "report.json").read_text())


def test_the_report_records_what_was_measured(profiled):
    _, _, rep = profiled
    st = rep["settings"]
    assert st["inputs"] == {"input": [1, 3, 40, 24]} and st["frames"] == 4 and st["warmup_runs"] == 1
    assert st["threads"] == {"intra_op": 1, "inter_op": 1}
    assert rep["machine"]["cpu"] and rep["machine"]["cpu_count"] >= 1
    pids = {r["process"]["pid"] for r in rep["results"]}
    assert len(pids) == 3 and os.getpid() not in pids  # every variant in a process of its own
    for r in rep["results"]:
        assert r["providers"] == ["CPUExecutionProvider"]
        assert r["latency_ms"]["n"] == 4 and "cv" in r["latency_ms"] and r["latency_e2e_ms"] is None


def test_model_only_and_end_to_end_are_separate_columns(profiled):
    root, r, _ = profiled
    md = (root / "rep" / "report.md").read_text()
    # one table per group: a p50 column under "Model-only latency" cannot be read as end to end
    assert "### Accuracy: drift against the FP32 reference" in md and "### Model-only latency: the graph alone" in md
    assert "| variant | p50 ms | p90 ms | p99 ms | fps | CV | first run ms |" in md
    assert "End-to-end latency" not in md  # the toy has no pipeline: no end-to-end table, not an empty one
    assert "inputs: input 1x3x40x24; threads: intra-op 1" in md


def test_verdicts_agree_and_unmeasurable_targets_are_not_failures(profiled):
    _, r, rep = profiled
    fp32, _, int8 = rep["results"]
    assert fp32["drift_gate"]["passed"] and fp32["budget"]["passed"]
    # seeded-random toy INT8 drifts far past 3x the noise floor: on a chaotic random network that
    # means nothing, so the gate is measured and not applied (never FAIL), and says why
    gate = int8["drift_gate"]
    assert gate["passed"] is None and gate["would_pass"] is False and gate["ratio_to_noise"] > 3
    assert gate["text"].startswith("gate not applied: mae ") and "seeded-random" in gate["text"]
    assert "FAIL" not in r.out and "drift gate not applied (seeded-random weights)" in r.out
    gate_check = [c for c in int8["budget"]["checks"] if c["name"].startswith("drift within the gate")]
    assert gate_check and gate_check[0]["passed"] is None and int8["budget"]["passed"] is True


def test_a_gpu_target_on_a_cpu_host_reads_not_measured_here(toy, tmp_path):
    profile = tmp_path / "gpu.toml"
    profile.write_text('name = "fastgpu"\nkind = "gpu"\n[device]\nmemory_mb = 8192\n'
                       '[targets.toy]\nfps = 1000000.0\n')
    r = cli("profile", "toy", "--variants", "fp32", "--artifacts", tmp_path / "art", "--out", tmp_path / "rep",
            "--frames", "2", "--profile", profile)
    assert r.rc == 0, r.err
    res = json.loads((tmp_path / "rep" / "report.json").read_text())["results"][0]
    fps = [c for c in res["budget"]["checks"] if c["name"].startswith("throughput")][0]
    assert fps["passed"] is None and "not measured here" in fps["status"]
    assert res["budget"]["passed"] is True  # a 2-core CPU is not failed against a GPU's frame rate
    assert "not measured here" in (tmp_path / "rep" / "report.md").read_text()


def test_the_same_command_runs_twice_and_a_foreign_file_is_kept(toy, tmp_path):
    args = ("profile", "toy", "--variants", "fp32", "--artifacts", tmp_path / "art", "--out", tmp_path / "rep",
            "--frames", "2")
    assert cli(*args).rc == 0
    assert cli(*args).rc == 0  # xopt replaces its own report
    md = tmp_path / "rep" / "report.md"
    md.write_text("my notes\n")  # now the user's file
    assert_user_error(cli(*args), "report.md already exists", "--force")
    assert md.read_text() == "my notes\n"
    assert cli(*args, "--force").rc == 0


@pytest.mark.parametrize("extra, needle", [
    (("--variants", "fp32,int4"), "unknown variant for toy 'int4'"),
    (("--backend", "cuda"), "unknown backend 'cuda'"),
    (("--profile", "rtx4090"), "unknown device profile 'rtx4090'"),
    (("--frames", "0"), "--frames 0 measures nothing"),
    (("--threads", "0"), "--threads 0 is not a thread count"),
    (("--height", "-8"), "--height -8 is not positive"),
])
def test_arguments_are_checked_before_the_output(toy, tmp_path, extra, needle):
    (tmp_path / "rep").mkdir()
    (tmp_path / "rep" / "report.json").write_text("{}")  # someone else's file
    r = cli("profile", "toy", "--out", tmp_path / "rep", "--artifacts", tmp_path / "art", *extra)
    assert_user_error(r, needle)
    assert not (tmp_path / "art").exists()


def test_report_regression_gate(profiled, tmp_path):
    root, _, rep = profiled
    path = root / "rep" / "report.json"
    r = cli("report", path, path, "--fail-on-regression", "10")
    assert r.rc == 0 and "no regression" in r.out
    slow = json.loads(path.read_text())
    for res in slow["results"]:
        res["latency_ms"]["p50"] *= 2
    (tmp_path / "slow.json").write_text(json.dumps(slow))
    r = cli("report", path, tmp_path / "slow.json", "--fail-on-regression", "10")
    assert r.rc == 3 and "model latency p50" in r.out and "+100.0%" in r.out
    worse = json.loads(path.read_text())
    worse["results"][2]["drift"]["mae"] += 10 * (worse["results"][2]["noise_floor"]["mae"] + 1e-6)
    (tmp_path / "worse.json").write_text(json.dumps(worse))
    r = cli("report", path, tmp_path / "worse.json", "--fail-on-regression", "10")
    assert r.rc == 3 and "drift mae" in r.out
    assert cli("report", path, tmp_path / "slow.json").rc == 0  # deltas only, no gate


def test_user_inputs_in_polygraphy_json(toy, tmp_path):
    import numpy as np

    from xopt.runtime.polygraphy_io import save_inputs

    feeds = [{"input": np.random.default_rng(3).uniform(-1, 1, (1, 3, 16, 8)).astype(np.float32)}]
    save_inputs(feeds, tmp_path / "inputs.json")
    r = cli("profile", "toy", "--variants", "fp32", "--artifacts", tmp_path / "art", "--out", tmp_path / "rep",
            "--frames", "2", "--inputs", tmp_path / "inputs.json")
    assert r.rc == 0, r.err
    st = json.loads((tmp_path / "rep" / "report.json").read_text())["settings"]
    assert st["inputs"] == {"input": [1, 3, 16, 8]} and st["inputs_file"].endswith("inputs.json")


def test_third_party_output_goes_to_a_log_beside_the_report(profiled):
    root, r, rep = profiled
    (log,) = (root / "rep" / "logs").glob("profile-*.log")  # this run's own log, named in the report
    assert rep["settings"]["log"] == f"logs/{log.name}" and f"log: {root / 'rep' / 'logs' / log.name}" in r.err
    assert "ResourceWarning" not in log.read_text()  # xopt's own pipes are closed
    assert "WARNING:root" not in r.err and "truncated" not in r.err


def test_narrow_terminal_gets_a_block_per_variant(profiled):
    from io import StringIO

    from rich.console import Console

    from xopt.analysis.report import print_summary

    _, _, rep = profiled
    buf = StringIO()
    print_summary(rep, Console(file=buf, width=80))
    text = buf.getvalue()
    assert "int8 (ort-cpu)" in text and "gate not applied" in text and "┃" not in text
    assert "  model-only: p50 " in text and "1.044e+04" not in text
