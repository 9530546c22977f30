"""Every parser of user input, fed arbitrary input: it returns something well-formed or raises
UserError (one line), never another exception. Images (files and arrays), device profile
TOML, manifest JSON, report JSON, engine metadata, --tolerance; FASTA/A3M and audio in
test_sequences_and_audio.py."""
from __future__ import annotations

import atexit
import io
import json
import math
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from xopt.errors import UserError

from ._support import png_bytes

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_DIR = Path(tempfile.mkdtemp(prefix="xopt-hypothesis-"))
atexit.register(shutil.rmtree, _DIR, True)  # hypothesis examples share one scratch folder


def _file(name: str, data: bytes) -> Path:
    path = _DIR / name
    path.write_bytes(data)
    return path


def _one_line(exc: UserError) -> None:
    assert "\n" not in str(exc) and str(exc).endswith(".")


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True), st.text(max_size=6)),
    lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=6), c, max_size=3)), max_leaves=8)


# ---------------------------------------------------------------- images

def _check_rgb(rgb) -> None:
    assert rgb.dtype == np.float32 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert np.isfinite(rgb).all() and rgb.min() >= 0 and rgb.max() <= 255


def _load_image(path: Path) -> None:
    from xopt.models.modnet.pipeline import to_rgb

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a warning on stderr would make the CLI's error two lines
            _check_rgb(to_rgb(path, (2160, 3840)))
    except UserError as exc:
        _one_line(exc)


def _seed_images() -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for mode, fmt in [("RGB", "PNG"), ("L", "JPEG"), ("RGBA", "TIFF"), ("I;16", "PNG"), ("P", "GIF"), ("RGB", "BMP"),
                      ("RGB", "WEBP")]:
        a = rng.integers(0, 255, (9, 7, 3), np.uint8)
        im = Image.fromarray(a)
        im = im.convert(mode) if mode != "I;16" else Image.fromarray(a[:, :, 0].astype(np.uint16) * 257)
        buf = io.BytesIO()
        im.save(buf, format=fmt)
        out.append(buf.getvalue())
    return out


SEED_IMAGES = _seed_images()


@SETTINGS
@given(st.binary(max_size=600), st.sampled_from([".png", ".jpg", ".tif", ".bin"]))
def test_image_loader_on_arbitrary_bytes(data, suffix):
    _load_image(_file("arbitrary" + suffix, data))


@SETTINGS
@given(st.sampled_from(range(len(SEED_IMAGES))), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                                          max_size=6), st.integers(8, 10**6))
def test_image_loader_on_damaged_real_images(which, flips, keep):
    data = bytearray(SEED_IMAGES[which][:keep])
    for pos, value in flips:
        if data:
            data[pos % len(data)] = value
    _load_image(_file("damaged.img", bytes(data)))


@SETTINGS
@given(st.integers(0, 5000), st.integers(0, 5000), st.sampled_from([1, 2, 4, 8, 16]), st.sampled_from([0, 2, 3, 4, 6]),
       st.binary(max_size=64))
def test_image_loader_on_hand_made_png_headers(width, height, depth, colour, rows):
    _load_image(_file("header.png", png_bytes(width, height, depth, colour if colour != 3 else 0, rows=rows)))


@SETTINGS
@given(hnp.arrays(st.sampled_from([np.uint8, np.uint16, np.float32, np.float64, np.int32, np.bool_, np.complex64]),
                  hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6)))
def test_image_loader_and_preprocessing_on_arbitrary_arrays(a):
    from xopt.models.modnet.pipeline import preprocess, to_rgb

    try:
        _check_rgb(to_rgb(a, (2160, 3840)))
        x, size = preprocess(a, 64, (2160, 3840))
        assert x.shape[:2] == (1, 3) and x.shape[2] % 32 == 0 and x.shape[3] % 32 == 0 and size == a.shape[:2]
        assert np.isfinite(x).all() and -1 <= x.min() and x.max() <= 1
    except UserError as exc:
        _one_line(exc)


# ---------------------------------------------------------------- device profile TOML

def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


toml_scalars = st.one_of(st.booleans(), st.integers(-5, 10**5), st.floats(-1e6, 1e6),
                         st.sampled_from([math.nan, math.inf]), st.text(max_size=5),
                         st.lists(st.integers(-3, 3000), max_size=3), st.sampled_from(["gpu", "cpu", "fp16", "int8"]),
                         st.lists(st.sampled_from(["fp32", "fp16", "x"]), max_size=2))
KEYS = ["name", "kind", "description", "memory_mb", "headroom", "precisions", "compute_capability", "fps",
        "max_height", "max_width", "height", "width", "min_shape", "max_shape", "modnet", "residues"]


@st.composite
def profile_toml(draw) -> str:
    lines = [f"{k} = {_toml_value(draw(toml_scalars))}" for k in draw(st.lists(st.sampled_from(KEYS[:3]), unique=True))]
    for table in draw(st.lists(st.sampled_from(["device", "targets", "targets.modnet", "targets.openfold"]),
                               unique=True)):
        lines.append(f"[{table}]")
        lines += [f"{k} = {_toml_value(draw(toml_scalars))}"
                  for k in draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=5))]
    return "\n".join(lines) + "\n"


def _load_profile(text: str) -> None:
    from xopt.profiles import get_profile
    from xopt.models.modnet.pipeline import max_image_size, profile_inputs

    path = _file("profile.toml", text.encode("utf-8", "surrogatepass"))
    try:
        p = get_profile(str(path))
    except UserError as exc:
        _one_line(exc)
        return
    assert p.memory_mb > 0 and 0 <= p.headroom < 1 and p.budget_mb > 0
    for model in ("modnet", "demucs", "openfold", "toy"):
        assert isinstance(p.model_targets(model), dict)
    json.dumps(p.to_json())  # reports embed it
    try:  # consumers of the targets: they may refuse a value, never crash on it
        h, w = max_image_size(profile=p)
        assert h > 0 and w > 0
        profile_inputs(p.model_targets("modnet") | {"height": 32, "width": 32}, 1)
    except UserError as exc:
        _one_line(exc)


@SETTINGS
@given(profile_toml())
def test_profile_parser_on_generated_toml(text):
    _load_profile(text)


@SETTINGS
@given(st.text(max_size=200))
def test_profile_parser_on_arbitrary_text(text):
    _load_profile(text)


# ---------------------------------------------------------------- manifest JSON

@SETTINGS
@given(st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode())))
def test_manifest_loader_on_arbitrary_files(data):
    from xopt.manifest import load

    d = _DIR / "manifest-dir"
    d.mkdir(exist_ok=True)
    (d / "manifest.json").write_bytes(data)
    try:
        m = load(d)
    except UserError as exc:
        _one_line(exc)
        return
    assert isinstance(m.model, str) and all(isinstance(v, dict) for v in m.variants)


@pytest.fixture(scope="module")
def toy_manifest(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    from xopt.testing import tiny_conv_onnx

    d = tmp_path_factory.mktemp("manifest")
    onnx_path = tiny_conv_onnx(d / "m_fp32.onnx")
    from xopt.hashing import sha256_file

    good = {"schema_version": 1, "model": "tiny", "weights": {"kind": "seeded-random", "seed": 0}, "config": {},
            "variants": [{"name": "fp32", "precision": "fp32", "path": onnx_path.name, "sha256": sha256_file(onnx_path),
                          "opset": 17, "inputs": [{"name": "x", "dtype": "float32", "shape": ["N", 3, "H", "W"]}],
                          "outputs": [{"name": "y", "dtype": "float32", "shape": ["N", 1, "H", "W"]}],
                          "parity": {"max_abs": 0.0, "max_rel": 0.0, "passed": True}, "ort_options": {}}]}
    return d, good


@SETTINGS
@given(st.data())
def test_a_hand_edited_manifest_loads_or_is_a_user_error(toy_manifest, data):
    """Any field of a real manifest replaced by arbitrary JSON: `xopt.runtime.load` gives a
    session or a UserError."""
    from xopt.runtime import load

    d, good = toy_manifest
    m = json.loads(json.dumps(good))
    entry = m["variants"][0]
    where = data.draw(st.sampled_from(["top", "variant", "ort_options", "inputs"]))
    target = {"top": m, "variant": entry, "ort_options": entry["ort_options"], "inputs": entry["inputs"][0]}[where]
    key = data.draw(st.sampled_from(sorted(target) + ["graph_optimization_level", "intra_op_num_threads",
                                                       "disabled_optimizers", "engines"]))
    target[key] = data.draw(json_values)
    (d / "manifest.json").write_text(json.dumps(m))
    try:
        with load(d):
            pass
    except UserError as exc:
        _one_line(exc)


# ---------------------------------------------------------------- report JSON

def _good_report() -> dict:
    result = {"variant": "fp32", "precision": "fp32", "backend": "ort-cpu", "artifact": "m.onnx", "error": None,
              "drift": {"mae": 0.0, "tensor": {"output": {"max_abs": 0.0, "mean_abs": 0.0, "max_rel": 0.0,
                                                          "cosine": 1.0, "finite": True}}},
              "noise_floor": {"mae": 0.001}, "drift_ok": True, "warmup_ms": {"load": 1.0, "first_inference": 2.0},
              "latency_ms": {"p50": 1.0, "p99": 2.0}, "latency_e2e_ms": None, "fps": 100.0, "fps_e2e": None,
              "memory": {"kind": "host-rss", "peak_mb": 10.0},
              "budget": {"passed": True, "checks": [{"name": "memory", "passed": True, "value": 10.0, "limit": 100.0,
                                                     "unit": "MB"}]}}
    return {"schema_version": 1, "kind": "profile", "model": "toy", "weights": {"kind": "seeded-random", "seed": 0},
            "config": {}, "created": "now", "command": "xopt profile toy", "machine": {"cpu": "x", "versions": {}},
            "profile": {"name": "p", "budget_mb": 100.0}, "settings": {"backend": "ort-cpu"}, "results": [result],
            "extra": {"drift_keys": ["mae"]}}


def _render(path: Path) -> None:
    from rich.console import Console

    from xopt.cli.common import table as _table
    from xopt.report_schema import load
    from xopt.analysis.report import comparison, kind_table, print_summary, render_markdown
    from xopt.analysis.report_html import render_html

    try:
        report = load(path)
        console = Console(file=io.StringIO(), width=200)
        if report["kind"] == "profile":
            print_summary(report, console)
            comparison([report, report], [str(path), "again"])
            render_markdown(report)
            render_html(report)
        else:
            console.print(_table(*kind_table(report)))
    except UserError as exc:
        _one_line(exc)


@SETTINGS
@given(st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode())))
def test_report_loader_on_arbitrary_files(data):
    _render(_file("report.json", data))


@SETTINGS
@given(st.data())
def test_a_hand_edited_report_renders_or_is_a_user_error(data):
    report = _good_report()
    result = report["results"][0]
    where = data.draw(st.sampled_from(["top", "result", "memory", "budget", "latency", "drift", "noise_floor",
                                       "machine", "profile"]))
    target = {"top": report, "result": result, "memory": result["memory"], "budget": result["budget"],
              "latency": result["latency_ms"], "drift": result["drift"], "noise_floor": result["noise_floor"],
              "machine": report["machine"], "profile": report["profile"]}[where]
    key = data.draw(st.sampled_from(sorted(target)))
    if data.draw(st.booleans()):
        del target[key]
    else:
        target[key] = data.draw(json_values)
    _render(_file("report.json", json.dumps(report).encode()))


# ---------------------------------------------------------------- engine metadata and --tolerance

@SETTINGS
@given(st.data())
def test_engine_metadata_reader(data):
    from xopt.runtime import engine_meta

    engine = _file("m.engine", b"engine bytes")
    meta = {"format": "xopt-engine", "schema_version": 1, "flavour": "trt-rtx", "trt_version": "1.7",
            "compute_capabilities": ["8.6"], "precision": "fp16", "shapes": {}, "engine_sha256": "0" * 64}
    if data.draw(st.booleans()):
        meta[data.draw(st.sampled_from(sorted(meta)))] = data.draw(json_values)
    else:
        meta = data.draw(json_values)
    engine_meta.sidecar_path(engine).write_text(json.dumps(meta))
    try:
        m = engine_meta.read(engine)
        engine_meta.mismatches(m, data.draw(st.sampled_from([None, "1.7", "10.1"])),
                               data.draw(st.sampled_from([None, "8.6", "9.0"])))
        engine_meta.check_file(engine, m)
    except UserError as exc:
        _one_line(exc)


@SETTINGS
@given(st.lists(st.text(max_size=20), max_size=3))
def test_tolerance_flag_parser(items):
    from xopt.cli.cmd_export import _tolerances

    try:
        out = _tolerances(items)
    except UserError as exc:
        _one_line(exc)
        return
    for bounds in out.values():
        for key, value in bounds.items():
            assert key in ("max_abs", "mean_abs", "max_rel") and math.isfinite(value) and value >= 0


def test_tolerance_flag_refuses_what_would_disable_or_break_the_gate():
    from xopt.cli.cmd_export import _tolerances

    assert _tolerances(["int8:mean_abs=0.05"]) == {"int8": {"mean_abs": 0.05}}
    for bad in ("int8:mean_abs=nan", "int8:mean_abs=-1", "int8:mean_abs=inf", "int8:cosine=0.9", "int8"):
        with pytest.raises(UserError, match="--tolerance"):
            _tolerances([bad])


def test_tolerance_for_a_variant_not_built_is_refused(tmp_path):
    from toy_model import ensure_registered

    from ._support import assert_user_error, cli

    ensure_registered()
    r = cli("export", "toy", "--fp16", "--tolerance", "int8:mean_abs=0.1", "--out", tmp_path / "art")
    assert_user_error(r, "--tolerance names variant(s) int8 that this export does not build", "use one of fp32, fp16")
    r = cli("export", "toy", "--tolerance", "fp32:max_abs=nan", "--out", tmp_path / "art")
    assert_user_error(r, "bad --tolerance 'fp32:max_abs=nan'", "a finite number >= 0")
    assert not (tmp_path / "art").exists()
