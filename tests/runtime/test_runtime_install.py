"""The runtime-only install (CI sets XOPT_WHEEL_CHECK=1): xopt's wheel with only `xopt[cpu]` in a
fresh venv has neither torch nor onnx, stays within the 200 MB goal at the size README states,
`xopt run modnet` there mattes an image with an export made here, and a command that needs onnx
says which extra brings it."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not os.environ.get("XOPT_WHEEL_CHECK"),
                                reason="builds a wheel and a venv: set XOPT_WHEEL_CHECK=1 (CI does) or run "
                                       "tools/runtime_wheel_check.py")


def test_runtime_wheel_runs_modnet_without_torch(tmp_path):
    pytest.importorskip("torch")
    from PIL import Image

    from xopt.export.pipeline import export_model
    from xopt.models.modnet.pipeline import sample_images

    export_model("modnet", ["fp32"], out_dir=tmp_path / "art")
    Image.fromarray(sample_images(1)[0][::4, ::4]).save(tmp_path / "photo.png")
    tools = Path(__file__).resolve().parents[2] / "tools"
    sys.path.insert(0, str(tools))  # the tools import their sibling venv_measure
    try:
        mod, claims = _load(tools / "runtime_wheel_check.py"), _load(tools / "install_check.py").claims
    finally:
        sys.path.remove(str(tools))
    res = mod.check(tmp_path / "art", "modnet", tmp_path / "photo.png", tmp_path / "matte.png", tmp_path / "work")
    print(f"\nruntime install: {res['install_seconds']} s, peak {res['install_peak_rss_mb']} MB, added "
          f"{res['added_mb']} MB; " + ", ".join(f"{p['name']} {p['mb']}" for p in res["packages"]))
    assert res["torch_absent"] and res["onnx_absent"] and not res["heavy_imported"], res
    assert res["run_rc"] == 0, res["run_output"]
    assert "site-packages/xopt/runtime" in res["runtime_module"]  # the installed package, not the source tree
    with Image.open(tmp_path / "matte.png") as m:
        assert m.mode == "L" and m.size == Image.open(tmp_path / "photo.png").size
    assert res["added_mb"] <= 200, res["packages"]
    claimed = claims((mod.ROOT / "README.md").read_text())["runtime_install_mb"]
    assert abs(res["added_mb"] - claimed) <= 0.1 * claimed, (res["added_mb"], claimed)

    # reading an arbitrary graph needs onnx: one line naming the extra, no traceback
    xopt = tmp_path / "work" / "venv" / "bin" / "xopt"
    graph = next((tmp_path / "art").glob("*.onnx"))
    proc = subprocess.run([str(xopt), "compare", str(graph), str(graph), "--out", str(tmp_path / "cmp")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert proc.returncode == 1 and 'pip install "xopt[onnx]"' in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "cmp").exists()


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"_xopt_tool_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
