"""The layer order, enforced by reading every module's imports with `ast` (nothing is executed).

    core -> runtime -> optimize -> export -> analysis -> cli      (each may import those before it)
    models/<name>: core, runtime, optimize and export through their public modules; never analysis or cli

Generic code never imports a model package (it finds models through the registry), a model never
imports another model, and nothing in core imports torch.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
ORDER = ("core", "runtime", "optimize", "export", "analysis", "cli")
MODEL_MAY_USE = {"core", "runtime", "optimize", "export"}


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] != "xopt" or len(parts) == 1:
        return "core"
    return {"cli": "cli", "analysis": "analysis", "export": "export", "optimize": "optimize",
            "runtime": "runtime", "models": "models"}.get(parts[1], "core")


def source_modules() -> dict[str, Path]:
    """Module name -> file, from the package-dir map in pyproject.toml (what the wheel ships)."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    out = {}
    for package in cfg["packages"]:
        folder = ROOT / cfg["package-dir"][package]
        for f in sorted(folder.glob("*.py")):
            out[package if f.stem == "__init__" else f"{package}.{f.stem}"] = f
    return out


def imports(module: str, source: str, known: set[str]) -> list[tuple[int, str, bool]]:
    """(line, imported module, at module level) for every import of an xopt module or torch."""
    tree = ast.parse(source)
    top = {id(n) for n in tree.body}
    for n in tree.body:  # module-level `if`/`try` blocks count as module level
        if isinstance(n, (ast.If, ast.Try)):
            top |= {id(c) for c in ast.walk(n)}
    package = module if module in known and any(k.startswith(module + ".") for k in known) else \
        module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for name in names:
            if name == "torch" or name.startswith("torch.") or name.startswith("xopt"):
                found.append((node.lineno, name, id(node) in top))
    return found


def violations(modules: dict[str, str]) -> list[str]:
    """Every import against the layer order in `modules` (name -> source)."""
    known = set(modules)
    bad = []
    for module, source in sorted(modules.items()):
        here = layer_of(module)
        for line, name, top_level in imports(module, source, known):
            where = f"{module}:{line} imports {name}"
            if name.split(".")[0] == "torch":
                if here == "core":
                    bad.append(f"{where}: core stays torch-free")
                continue
            there = layer_of(name)
            if there == "models":
                own = ".".join(module.split(".")[:3])
                if here != "models":
                    bad.append(f"{where}: generic code finds models only through the registry")
                elif not (name == own or name.startswith(own + ".")):
                    bad.append(f"{where}: a model does not import another model")
                continue
            if here == "models":
                if there not in MODEL_MAY_USE:
                    bad.append(f"{where}: a model uses only core, runtime, optimize and export")
                elif any(p.startswith("_") for p in name.split(".")[1:]):
                    bad.append(f"{where}: a model uses another layer's public modules only")
                continue
            if ORDER.index(there) > ORDER.index(here):
                bad.append(f"{where}: {here} must not import {there} (order: {' -> '.join(ORDER)})")
    return bad


def test_the_tree_keeps_the_layer_order():
    modules = {name: path.read_text(encoding="utf-8") for name, path in source_modules().items()}
    assert len(modules) > 50  # the package-dir map was read
    assert violations(modules) == []


def test_model_specs_and_pipelines_import_no_torch_at_module_level():
    modules = source_modules()
    for name, path in modules.items():
        if layer_of(name) == "models" and name.count(".") == 2 or name.endswith(".pipeline"):
            top = [n for line, n, t in imports(name, path.read_text(), set(modules)) if t and n.startswith("torch")]
            assert not top, f"{name} imports torch at import time"


@pytest.mark.parametrize("module, source, needle", [
    ("xopt.runtime.profiler", "from xopt.export.pipeline import export_model\n", "runtime must not import export"),
    ("xopt.runtime.backends.x", "def f():\n    from xopt.analysis import report\n", "runtime must not import analysis"),
    ("xopt.compare", "import torch\n", "core stays torch-free"),
    ("xopt.optimize.fp16", "from xopt.models.modnet import SPEC\n", "only through the registry"),
    ("xopt.export.pipeline", "from xopt import cli\n", "export must not import cli"),
    ("xopt.models.modnet.net", "from xopt.models.demucs import core\n", "another model"),
    ("xopt.models.modnet.net", "from xopt.analysis.profiler import run\n", "only core, runtime"),
    ("xopt.models.modnet.net", "from xopt.optimize import _trt_build\n", "public modules only"),
])
def test_a_back_import_is_reported(module, source, needle):
    known = {"xopt.optimize._trt_build", "xopt.cli", "xopt.analysis.report", module}
    found = violations({module: source, **{k: "" for k in known - {module}}})
    assert len(found) == 1 and needle in found[0], found


def test_relative_imports_and_own_model_modules_are_fine():
    modules = {"xopt.models.modnet": "from . import pipeline\nfrom .net import MODNet\n",
               "xopt.models.modnet.pipeline": "from xopt.runtime.pipeline import Pipeline\n",
               "xopt.models.modnet.net": "from xopt.models.modnet.weights import seeded\n",
               "xopt.models.modnet.weights": "", "xopt.runtime.pipeline": ""}
    assert violations(modules) == []
