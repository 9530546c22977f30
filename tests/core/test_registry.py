"""One registry type for models, passes and backends: discovery, refused duplicates, modules that
fail to import listed as unavailable, and third-party models through the `xopt.models` entry points."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from xopt.errors import UserError
from xopt.registry import MODELS, DuplicateError, Registry

ROOT = Path(__file__).resolve().parents[2]


class Item:
    def __init__(self, name):
        self.name = name


def test_a_duplicate_name_is_refused_and_the_same_object_is_not():
    reg = Registry("thing", "xopt.optimize")
    first = reg.register(Item("a"))
    assert reg.register(first) is first
    with pytest.raises(DuplicateError, match="thing 'a' registered twice"):
        reg.register(Item("a"))


def test_a_module_that_fails_to_import_is_listed_with_its_error(tmp_path, monkeypatch):
    pkg = tmp_path / "plugpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from xopt.registry import Registry\nREG = Registry('thing', 'plugpkg')\n")
    (pkg / "good.py").write_text("from plugpkg import REG\n\nclass G:\n    name = 'good'\n\nREG.register(G())\n")
    (pkg / "bad.py").write_text("import a_module_that_is_not_installed\n")
    (pkg / "_private.py").write_text("raise RuntimeError('never imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from plugpkg import REG

    assert [i.name for i in REG.all()] == ["good"]
    assert list(REG.unavailable()) == ["bad"] and "a_module_that_is_not_installed" in REG.unavailable()["bad"]
    with pytest.raises(UserError, match="thing bad is unavailable here .*ModuleNotFoundError"):
        REG.get("bad")
    with pytest.raises(UserError, match="unknown thing 'nope'"):
        REG.get("nope")


def test_the_three_registries_share_the_type():
    from xopt.optimize.base import PASSES
    from xopt.runtime.backends.base import BACKENDS

    assert {type(r) for r in (MODELS, PASSES, BACKENDS)} == {Registry}
    assert {"modnet", "demucs", "openfold"} <= set(MODELS.items) | {s.name for s in MODELS.all()}
    assert {"fp16", "int8", "slim", "engine"} <= {p.name for p in PASSES.all()}
    assert {"ort-cpu", "torch"} <= {b.name for b in BACKENDS.all()}


def _toy_distribution(site: Path) -> None:
    """A separate distribution that adds a model through the entry-point group, as pip installs it."""
    pkg = site / "xopt_toyplug"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent('''
        from xopt.spec import ModelSpec, Tolerance, Variant

        SPEC = ModelSpec(
            name="toyplug", task="plug-in test", build="xopt_toyplug.net:build", input_names=["x"],
            output_names=["y"], dynamic_axes={}, example_inputs="xopt_toyplug.net:feed",
            validation_inputs="xopt_toyplug.net:feeds", variants={"fp32": Variant("fp32", "fp32", (), Tolerance(atol=1e-6))},
            calibration_inputs="xopt_toyplug.net:feeds", drift="xopt_toyplug.net:drift",
            perturb="xopt_toyplug.net:perturb", profile_inputs="xopt_toyplug.net:feeds",
        )
    '''))
    dist = site / "xopt_toyplug-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: xopt-toyplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[xopt.models]\ntoyplug = xopt_toyplug:SPEC\n"
                                          "broken = xopt_toyplug_missing:SPEC\n")


def test_a_third_party_model_registers_through_the_entry_point_group(tmp_path):
    _toy_distribution(tmp_path / "site")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "COLUMNS": "200"}
    r = subprocess.run([sys.executable, "-m", "xopt.cli", "list"], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "toyplug" in r.stdout
    assert "plug-in test" in r.stdout
    # the broken entry point is shown, with its error, not silently dropped
    assert "unavailable here" in r.stdout and "broken" in r.stdout and "xopt_toyplug_missing" in r.stdout
    r = subprocess.run([sys.executable, "-m", "xopt.cli", "profile", "broken"], capture_output=True, text=True,
                       env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 1 and "model broken is unavailable here" in r.stderr and "Traceback" not in r.stderr


def test_python_in_the_repository_root_imports_the_package_not_a_source_folder():
    assert not (ROOT / "xopt").exists()  # the core lives in core/, so nothing in the root shadows `xopt`
    r = subprocess.run([sys.executable, "-c", "import xopt.runtime, xopt.export, xopt.models.modnet; "
                        "print(xopt.runtime.__name__)"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "xopt.runtime", r.stderr
