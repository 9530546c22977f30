"""The front door, as a new user walks through it: the README's main-job commands exactly as
printed, then each command with no flags at all, on MODNet at full size (512x512 on the
default device profile) with the built-in seeded-random weights. Each must finish and write
what it promises, within what the README says the main job costs. MODNet is cheap enough for
CI; the heavy models keep their tiny configs."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def xopt(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xopt.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "COLUMNS": "120"}, timeout=1800)


def readme_main_job() -> list[list[str]]:
    """The xopt commands of the README's first code block (the install is the test's venv)."""
    block = re.search(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), re.S).group(1)
    commands = []
    for line in block.splitlines():
        if line.strip().startswith("#"):
            continue
        for part in line.split("&&"):
            words = shlex.split(part)
            if words and words[0] == "xopt":
                commands.append(words[1:])
    return commands


# `under <!-- measured: main_job_minutes -->12 min`: an upper bound README states for the main job
COST = re.compile(r"<!--\s*measured:\s*(main_job_\w+)\s*-->\s*([\d,]+(?:\.\d+)?)\s*(min|MB|GB)\b")
UNITS = {"min": 60.0, "MB": 2.0 ** 20, "GB": 2.0 ** 30}  # to seconds and bytes


def readme_costs(text: str) -> dict[str, float]:
    """README's main-job bounds: {key: seconds or bytes}."""
    return {key: float(value.replace(",", "")) * UNITS[unit] for key, value, unit in COST.findall(text)}


def test_readme_costs_read_the_marked_bounds():
    text = ("under <!-- measured: main_job_minutes -->12 min, <!--measured:main_job_peak_rss_mb--> 1.5 GB "
            "and <!-- measured: main_job_disk_mb -->1,200 MB; <!-- measured: main_install_mb -->1.3 GB")
    assert readme_costs(text) == {"main_job_minutes": 720.0, "main_job_peak_rss_mb": 1.5 * 2 ** 30,
                                  "main_job_disk_mb": 1200 * 2 ** 20}


def xopt_measured(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, int]:
    """xopt as `xopt()` runs it, and the peak RSS in bytes of the largest process of its tree, as
    tools/ci_cost.py measures it (wait4's ru_maxrss: the command's own and that of every child it
    waited for, e.g. profile's per-variant processes). Through that small process, because a child
    of this large pytest process would carry pytest's high-water mark from before its exec."""
    with tempfile.TemporaryDirectory() as tmp:  # outside the job's folder
        facts = Path(tmp) / "cost.json"
        cmd = [sys.executable, str(ROOT / "tools" / "ci_cost.py"), "--readme", os.devnull, "--json", str(facts),
               "--", sys.executable, "-m", "xopt.cli", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=1800,
                              env={**os.environ, "COLUMNS": "120"})
        measured = json.loads(facts.read_text(encoding="utf-8"))
    return subprocess.CompletedProcess(proc.args, measured["exit"], proc.stdout, proc.stderr), measured["peak_rss_bytes"]


def _bytes_under(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("front-door")


def _ok(r: subprocess.CompletedProcess) -> None:
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert "Traceback" not in r.stderr


def test_the_readme_main_job_as_printed(home):
    """The commands as printed, in a fresh folder, within the README's bounds on wall time, peak
    memory and disk written (stated as upper bounds with margin for a busy CI machine)."""
    commands = readme_main_job()
    assert commands and commands[0][:2] == ["export", "modnet"], commands
    bounds = readme_costs(README.read_text(encoding="utf-8"))
    assert set(bounds) == {"main_job_minutes", "main_job_peak_rss_mb", "main_job_disk_mb"}, bounds
    before, peak, t0 = _bytes_under(home), 0, time.perf_counter()
    for args in commands:
        r, rss = xopt_measured(args, home)
        _ok(r)
        peak = max(peak, rss)
    wall, written = time.perf_counter() - t0, _bytes_under(home) - before
    print(f"\nREADME's main job: {wall / 60:.1f} min wall, peak RSS {peak / 2 ** 30:.2f} GB (largest process), "
          f"{written / 2 ** 20:,.0f} MB written")
    assert wall <= bounds["main_job_minutes"], f"{wall / 60:.1f} min, README says under {bounds['main_job_minutes'] / 60:g}"
    assert peak <= bounds["main_job_peak_rss_mb"], (peak, bounds["main_job_peak_rss_mb"])
    assert 0 < written <= bounds["main_job_disk_mb"], (written, bounds["main_job_disk_mb"])
    report = json.loads((home / "reports" / "modnet" / "report.json").read_text(encoding="utf-8"))
    assert report["weights"]["kind"] == "seeded-random"
    assert {r["variant"] for r in report["results"]} >= {"fp32", "fp16"}
    assert all(r["error"] is None for r in report["results"])
    for name in ("report.md", "report.html"):
        assert (home / "reports" / "modnet" / name).stat().st_size > 0


def test_export_with_fp16_and_int8_keeps_every_variant(home):
    r = xopt(["export", "modnet", "--fp16", "--int8"], home)
    _ok(r)
    m = json.loads((home / "artifacts" / "modnet" / "manifest.json").read_text(encoding="utf-8"))
    assert {v["name"] for v in m["variants"]} >= {"fp32", "fp16", "int8"} and not m.get("failed")
    int8 = next(v for v in m["variants"] if v["name"] == "int8")
    gate = next(p["facts"]["gate"] for p in int8["passes"] if p["name"] == "int8-gated")
    assert gate["applied"] is False and "seeded-random" in gate["why_not_applied"]
    assert "int8: gate: not applied" in r.stdout


def test_profile_with_no_flags_writes_its_report(home):
    r = xopt(["profile", "modnet"], home)
    _ok(r)
    report = json.loads((home / "reports" / "modnet" / "report.json").read_text(encoding="utf-8"))
    rows = {x["variant"]: x for x in report["results"]}
    assert set(rows) == {"fp32", "fp16", "int8"} and all(x["error"] is None for x in rows.values())
    assert rows["int8"]["drift_gate"]["passed"] in (True, None)  # never FAIL on seeded-random weights
    if rows["int8"]["drift_gate"]["passed"] is None:
        assert "gate not applied" in rows["int8"]["drift_gate"]["text"]


def test_bench_with_no_flags(home):
    r = xopt(["bench", "modnet"], home)
    _ok(r)
    assert "ort int8" in r.stdout and "torch fp32" in r.stdout


def test_run_on_a_photo_with_no_flags(home):
    import numpy as np
    from PIL import Image

    photo = home / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(photo)
    r = xopt(["run", "modnet", "photo.png"], home)  # no -o: outputs/modnet/<stem>.png
    _ok(r)
    with Image.open(home / "outputs" / "modnet" / "photo.png") as matte:
        assert matte.size == (400, 300)
    _ok(xopt(["run", "modnet", "photo.png", "-o", "matte.png"], home))
    with Image.open(home / "matte.png") as matte:
        assert matte.size == (400, 300)


def test_fit_with_no_flags_and_its_report(home):
    r = xopt(["fit", "modnet"], home)
    _ok(r)
    assert "max 16:9" in r.stdout and "Fits rtx3060-laptop-12gb" in r.stdout
    report = json.loads((home / "reports" / "modnet-fit" / "report.json").read_text(encoding="utf-8"))
    assert {x["variant"] for x in report["results"]} == {"fp32", "fp16", "int8"}
    assert all("error" not in x for x in report["results"])
    if (home / "artifacts" / "modnet" / "manifest.json").exists():  # the export above: measured on ORT too
        assert report["extra"]["memory_model"]["onnxruntime"] is not None
    shown = xopt(["report", "reports/modnet-fit"], home)
    _ok(shown)
    assert "max square" in shown.stdout and "2880x2880" in shown.stdout
