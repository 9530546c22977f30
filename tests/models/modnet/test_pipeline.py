"""MODNet numpy side: the official resize rule, image decoding, drift metrics, the pipeline
over a real ONNX Runtime session, and image/video files through `process_file`."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xopt.errors import OutputExistsError, UserError
from xopt.models.modnet import pipeline as mm

# (h, w) -> inference size under the demo's rule with ref size 512
RULE = [
    ((100, 100), (512, 512)),  # smaller on both sides: short side up to 512
    ((64, 48), (672, 512)),  # int(64 / 48 * 512) = 682 -> 672
    ((512, 512), (512, 512)),
    ((480, 640), (480, 640)),  # straddles 512: kept, already multiples of 32
    ((511, 513), (480, 512)),  # straddles: kept, floored
    ((300, 451), (512, 768)),  # int(451 / 300 * 512) = 769 -> 768
    ((1080, 1920), (512, 896)),  # larger on both sides: short side down to 512
    ((4000, 3000), (672, 512)),
    ((2000, 100), (1984, 96)),
]


@pytest.mark.parametrize("hw,expected", RULE)
def test_resize_rule_matches_the_official_demo(hw, expected):
    assert mm.model_size(*hw) == expected


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 5000), st.integers(1, 5000))
def test_resize_rule_gives_multiples_of_32_or_a_user_error(h, w):
    try:
        rh, rw = mm.model_size(h, w)
    except UserError:
        return
    assert rh % 32 == 0 and rw % 32 == 0 and min(rh, rw) >= 32
    if max(h, w) < 512 or min(h, w) > 512:
        assert min(rh, rw) == 512
    else:
        assert (rh, rw) == (h - h % 32, w - w % 32)


@pytest.mark.parametrize("hw", [(1, 1), (1, 700), (10, 2000), (3, 100)])
def test_degenerate_sizes_are_refused(hw):
    with pytest.raises(UserError):
        mm.model_size(*hw)


def _brute_area(x, n):
    s = len(x) / n
    return np.array([sum(x[i] * max(0.0, min((o + 1) * s, i + 1) - max(o * s, i)) for i in range(len(x))) / s
                     for o in range(n)])


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**16))
def test_area_resize_is_exact_pixel_area_averaging(n_in, n_out, seed):
    x = np.random.default_rng(seed).random(n_in).astype(np.float32)
    got = mm.area_resize(x[:, None], (n_out, 1))[:, 0]
    np.testing.assert_allclose(got, _brute_area(x, n_out), atol=1e-5)
    assert abs(got.mean() - x.mean()) < 1e-5  # area resampling preserves the mean


def test_area_resize_by_an_integer_factor_is_the_block_mean():
    x = np.random.default_rng(0).random((12, 18, 3)).astype(np.float32)
    got = mm.area_resize(x, (4, 6))
    np.testing.assert_allclose(got, x.reshape(4, 3, 6, 3, 3).mean(axis=(1, 3)), atol=1e-6)


def test_image_kinds_become_rgb_on_the_8_bit_scale(tmp_path):
    from PIL import Image

    rgb = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    grey = rgb[:, :, 0]
    np.testing.assert_array_equal(mm.to_rgb(grey), np.repeat(grey[:, :, None], 3, 2).astype(np.float32))
    rgba = np.concatenate([rgb, np.zeros((40, 50, 1), np.uint8)], axis=2)
    np.testing.assert_array_equal(mm.to_rgb(rgba), rgb.astype(np.float32))
    np.testing.assert_allclose(mm.to_rgb(rgb.astype(np.uint16) * 257), rgb, atol=1e-4)
    np.testing.assert_allclose(mm.to_rgb(rgb / 255.0), rgb, atol=1e-3)
    np.testing.assert_array_equal(mm.to_rgb(Image.fromarray(rgba)), rgb.astype(np.float32))
    np.testing.assert_array_equal(mm.to_rgb(Image.fromarray(rgb).convert("P", palette=Image.Palette.WEB)).shape,
                                  (40, 50, 3))
    path = tmp_path / "grey16.png"
    Image.fromarray(grey.astype(np.uint16) * 257).save(path)  # a 16-bit greyscale PNG
    np.testing.assert_allclose(mm.to_rgb(path), np.repeat(grey[:, :, None], 3, 2), atol=1e-3)


@pytest.mark.parametrize("bad", [
    np.zeros((1, 1, 3), np.uint8), np.zeros((4, 4, 2), np.uint8), np.zeros((4, 4), np.int32),
    np.full((8, 8), 2.0), np.full((8, 8), np.nan), "text",
])
def test_bad_images_are_user_errors(bad, tmp_path):
    if isinstance(bad, str):
        path = tmp_path / "photo.jpg"
        path.write_text("not an image")
        bad = path
    with pytest.raises(UserError):
        mm.preprocess(bad)


def test_missing_and_directory_paths_are_user_errors(tmp_path):
    for path in (tmp_path / "nope.png", tmp_path):
        with pytest.raises(UserError, match=str(path)):
            mm.preprocess(path)


def test_preprocess_normalises_like_the_demo():
    photo = mm.sample_images(1)[0]  # the astronaut, 512x512: no resize
    x, size = mm.preprocess(photo)
    assert size == (512, 512) and x.shape == (1, 3, 512, 512) and x.dtype == np.float32
    np.testing.assert_allclose(x[0].transpose(1, 2, 0), (photo - 127.5) / 127.5, atol=1e-6)


def test_samples_are_real_photographs_in_a_fixed_order():
    a, b = mm.sample_images(8), mm.sample_images(8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert a[0].shape == (512, 512, 3) and all(x.dtype == np.uint8 and x.ndim == 3 for x in a)
    assert len({x.tobytes() for x in a}) == 8 and all(x.std() > 20 for x in a)
    feeds = mm.calibration_feeds(3, (64, 96))
    assert [f["input"].shape for f in feeds] == [(1, 3, 64, 96)] * 3
    assert all(-1 <= f["input"].min() and f["input"].max() <= 1 for f in feeds)


def test_profile_inputs_follow_the_device_targets_and_seed():
    from xopt.profiles import get_profile

    one = mm.profile_inputs({"height": 64, "width": 96}, 2, seed=0)
    again = mm.profile_inputs({"height": 64, "width": 96}, 2, seed=0)
    other = mm.profile_inputs({"height": 64, "width": 96}, 2, seed=5)
    assert [f["input"].shape for f in one] == [(1, 3, 64, 96)] * 2
    assert np.array_equal(one[1]["input"], again[1]["input"]) and not np.array_equal(one[1]["input"], other[1]["input"])
    assert mm.profile_inputs(get_profile("cpu"), 1, 0)[0]["input"].shape == (1, 3, 512, 512)
    with pytest.raises(UserError, match="multiple of 32"):
        mm.profile_inputs({"height": 100, "width": 96}, 1, 0)


def test_perturb_moves_each_value_by_at_most_one_grey_level():
    feed = mm.calibration_feeds(1, (32, 32))[0]
    out = mm.perturb(feed, np.random.default_rng(0))["input"]
    steps = (out - feed["input"]) * 127.5
    assert np.abs(steps).max() <= 1 + 1e-4 and np.abs(steps).mean() > 0.5
    inside = np.abs(out) < 1  # values pushed past +-1 are clipped, as an 8-bit image would be
    assert np.allclose(steps[inside], np.round(steps[inside]), atol=1e-3) and out.dtype == np.float32
    assert np.array_equal(out, mm.perturb(feed, np.random.default_rng(0))["input"])


def test_drift_metrics():
    rng = np.random.default_rng(0)
    ref = rng.random((2, 1, 32, 48)).astype(np.float32)
    same = mm.drift({"output": ref}, {"output": ref.copy()}, {})
    assert same == {"iou": 1.0, "sad": 0.0, "mse": 0.0, "mae": 0.0, "grad": 0.0}
    shifted = mm.drift({"output": ref}, {"output": ref + 0.1}, {})
    assert shifted["sad"] == pytest.approx(32 * 48 * 0.1 / 1000, rel=1e-4)
    assert shifted["mae"] == pytest.approx(0.1, rel=1e-4) and shifted["mse"] == pytest.approx(0.01, rel=1e-3)
    assert shifted["grad"] == pytest.approx(0.0, abs=1e-9)  # a constant offset has the same gradients
    inverted = mm.drift({"output": (ref > 0.5) * 1.0}, {"output": (ref <= 0.5) * 1.0}, {})
    assert inverted["iou"] == 0.0
    blurred = mm.area_resize(mm.area_resize(ref[0, 0], (8, 12)), (32, 48))
    assert mm.matte_metrics(ref[0, 0], blurred)["grad"] > 0


def test_gradient_magnitude_reads_the_slope_of_a_ramp():
    ramp = np.tile(np.arange(40, dtype=np.float64) * 0.02, (30, 1))
    g = mm.gradient_magnitude(ramp)
    np.testing.assert_allclose(g[10:20, 10:30], 0.02, rtol=1e-6)


# ---------------------------------------------------------------- pipeline over ONNX Runtime

@pytest.fixture(scope="module")
def session(tmp_path_factory):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from xopt.models.modnet.net import MODNet
    from xopt.export.onnx_export import to_onnx
    from xopt.registry import get_model
    from xopt.runtime import load

    spec = get_model("modnet")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny graph: spare the shared CI cores
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("modnet") / "modnet.onnx"
    to_onnx(MODNet().eval(), mm.calibration_feeds(1, (64, 64))[0], path, spec.input_names, spec.output_names,
            spec.dynamic_axes, spec.opset, spec.exporter)
    torch.set_num_threads(threads)
    sess = load(path, backend="ort-cpu", intra_op_num_threads=1)
    yield sess
    sess.close()


@pytest.fixture
def pipe(session):
    # ref size 64 keeps the network at 64 px: the same rule and code path, a fraction of the time
    return mm.MattingPipeline(session, {"ref_size": 64})


def test_pipeline_returns_the_matte_at_input_size(pipe, session):
    photo = mm.sample_images(3)[2]  # coffee, 400x600
    matte = pipe(photo)
    assert matte.shape == (400, 600) and matte.dtype == np.float32
    assert 0.0 <= matte.min() and matte.max() <= 1.0 and matte.std() > 0
    # at an already-legal size nothing is resampled: the pipeline is the graph plus clipping
    small = photo[:64, :96]
    direct = session.run({"input": mm.normalise(small.astype(np.float32))})["output"][0, 0]
    np.testing.assert_allclose(pipe(small), np.clip(direct, 0, 1), atol=1e-6)


def test_pipeline_accepts_pil_grey_rgba_and_paths(pipe, tmp_path):
    from PIL import Image

    photo = mm.sample_images(1)[0][::4, ::4]  # 128x128
    ref = pipe(photo)
    rgba = np.concatenate([photo, np.full(photo.shape[:2] + (1,), 9, np.uint8)], axis=2)
    np.testing.assert_array_equal(pipe(rgba), ref)
    np.testing.assert_array_equal(pipe(Image.fromarray(photo)), ref)
    Image.fromarray(photo).save(tmp_path / "p.png")
    np.testing.assert_array_equal(pipe(tmp_path / "p.png"), ref)
    assert pipe(photo[:, :, 0]).shape == (128, 128)
    assert [m.shape for m in pipe.frames([photo, photo[:100]])] == [(128, 128), (100, 128)]
    raw = pipe.raw_samples(2, {"height": 64, "width": 96}, seed=1)
    assert [r.shape for r in raw] == [(64, 96, 3)] * 2 and raw[0].dtype == np.uint8


def test_process_file_writes_an_8_bit_png_matte(pipe, tmp_path):
    from PIL import Image

    src = tmp_path / "in.jpg"
    Image.fromarray(mm.sample_images(4)[3]).save(src)  # chelsea, 300x451
    written = pipe.process_file(src, tmp_path / "out.png")
    with Image.open(written[0]) as im:
        assert im.mode == "L" and im.size == (451, 300)
    with pytest.raises(OutputExistsError):
        pipe.process_file(src, tmp_path / "out.png")
    assert pipe.process_file(src, tmp_path / "out.png", force=True) == written
    assert pipe.process_file(src, tmp_path)[0] == tmp_path / "in.png"  # a directory: named after the source
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    with pytest.raises(UserError):
        pipe.process_file(bad, tmp_path / "x.png")


def _video(path, frames, codec="libx264"):
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        if frames:
            out.mux(stream.encode(None))
        else:
            out.start_encoding()
    return path


def _decode(path):
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="gray") for f in c.decode(c.streams.video[0])]


def test_process_file_video_to_png_sequence_and_video(pipe, tmp_path):
    from PIL import Image

    photo = mm.sample_images(1)[0]
    frames = [np.ascontiguousarray(photo[100 + 8 * i:164 + 8 * i, 200:264]) for i in range(5)]
    src = _video(tmp_path / "clip.mp4", frames)
    seen = []
    written = pipe.process_file(src, tmp_path / "seq", progress=lambda it: (seen.append(1) or x for x in it))
    assert [p.name for p in written] == [f"{i:06d}.png" for i in range(5)] and len(seen) == 5
    pngs = [np.asarray(Image.open(p)) for p in written]
    assert all(p.shape == (64, 64) and p.dtype == np.uint8 for p in pngs)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind
    with pytest.raises(OutputExistsError):
        pipe.process_file(src, tmp_path / "seq")
    pipe.process_file(src, tmp_path / "seq", force=True)

    lossless = pipe.process_file(src, tmp_path / "alpha.mkv")[0]
    decoded = _decode(lossless)
    assert len(decoded) == 5 and all(np.array_equal(d, p) for d, p in zip(decoded, pngs))
    mp4 = _decode(pipe.process_file(src, tmp_path / "alpha.mp4")[0])
    assert len(mp4) == 5 and mp4[0].shape == (64, 64)
    assert np.abs(mp4[2].astype(int) - pngs[2]).mean() < 4  # H.264 at high quality


def test_zero_frame_video_is_a_user_error(pipe, tmp_path):
    src = _video(tmp_path / "empty.avi", [], codec="ffv1")
    for dst in (tmp_path / "seq", tmp_path / "out.mkv"):
        with pytest.raises(UserError, match="no video frames"):
            pipe.process_file(src, dst)
        assert not dst.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.avi"]
