"""Images and videos as users have them: every mode and depth that is an image is matted at
its own size; what is not (1x1, over the profile's resolution, not an image, a video without
frames) is one line naming the problem and the fix, exit code 1, and no output.
(Audio, FASTA and A3M inputs: test_sequences_and_audio.py.)"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from xopt.errors import UserError

from ._support import assert_user_error, cli, debris, empty_video, png_bytes, png_from_array, snapshot

pytest.importorskip("onnxruntime")


def _photo(h=48, w=64) -> np.ndarray:
    from xopt.models.modnet.pipeline import sample_images

    return np.ascontiguousarray(sample_images(1)[0][:h * 4:4, :w * 4:4])  # uint8 H x W x 3, up to 128 px


def _write(path, kind) -> tuple[int, int]:
    rgb = _photo()
    if kind == "grey":
        Image.fromarray(rgb[:, :, 0]).save(path)
    elif kind == "rgba":
        Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])).save(path)
    elif kind == "grey 16-bit":
        Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257).save(path)
    elif kind == "rgb 16-bit":
        path.write_bytes(png_from_array(rgb.astype(np.uint16) * 257))
    elif kind == "palette":
        Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(path)
    elif kind == "grey+alpha":
        Image.fromarray(rgb[:, :, 0]).convert("LA").save(path)
    return rgb.shape[:2]


@pytest.mark.parametrize("kind", ["grey", "rgba", "grey 16-bit", "rgb 16-bit", "palette", "grey+alpha"])
def test_every_kind_of_image_is_matted_at_its_size(kind, modnet_export, tmp_path):
    src = tmp_path / "in.png"
    h, w = _write(src, kind)
    before = src.read_bytes()
    r = cli("run", "modnet", src, "-o", tmp_path / "matte.png", "--artifacts", modnet_export)
    assert r.rc == 0, r.err
    with Image.open(tmp_path / "matte.png") as m:
        assert m.mode == "L" and m.size == (w, h)
    assert src.read_bytes() == before and not debris(tmp_path)


def test_depth_and_alpha_do_not_change_the_matte(modnet_export):
    """The same picture as 8-bit RGB, 16-bit RGB and RGBA gives the same matte (alpha is dropped,
    16-bit is scaled to the 8-bit range)."""
    from xopt.runtime import load_pipeline

    rgb = _photo()
    pipe = load_pipeline(modnet_export)
    try:
        ref = pipe(rgb)
        np.testing.assert_allclose(pipe(rgb.astype(np.uint16) * 257), ref, atol=1e-5)
        np.testing.assert_array_equal(pipe(np.dstack([rgb, np.zeros(rgb.shape[:2], np.uint8)])), ref)
    finally:
        pipe.close()


def _expect_refusal(modnet_export, tmp_path, src, *needles):
    before = snapshot(src.parent)
    r = cli("run", "modnet", src, "-o", tmp_path / "out" / "matte.png", "--artifacts", modnet_export)
    line = assert_user_error(r, *needles)
    assert not (tmp_path / "out").exists()
    assert snapshot(src.parent) == before and not debris(tmp_path)
    return line


def test_one_pixel_image(modnet_export, tmp_path):
    (tmp_path / "in").mkdir()
    src = tmp_path / "in" / "dot.png"
    Image.new("RGB", (1, 1), (200, 10, 10)).save(src)
    _expect_refusal(modnet_export, tmp_path, src, "the image is 1x1 px, too small to matte",
                    "at least 2 px on each side")


@pytest.mark.parametrize("w, h", [(7681, 4000), (4000, 7681), (4400, 4400), (12000, 8000)])
def test_image_over_the_profile_resolution_is_refused_before_decoding(w, h, modnet_export, tmp_path):
    """The default profile allows 7680x4320 (8K) in either orientation. The files' pixel data is
    absent: the size is refused from the header, so nothing is decoded (12000x8000 would be
    PIL's decompression-bomb warning otherwise)."""
    (tmp_path / "in").mkdir()
    src = tmp_path / "in" / "huge.png"
    src.write_bytes(png_bytes(w, h, rows=b""))
    _expect_refusal(modnet_export, tmp_path, src, f"the image is {w}x{h} px, over the 7680x4320 px the device "
                                                  "profile allows", "scale it down to at most 7680x4320")


def test_decompression_bomb_is_refused(modnet_export, tmp_path):
    (tmp_path / "in").mkdir()
    src = tmp_path / "in" / "bomb.png"
    src.write_bytes(png_bytes(20000, 20000, rows=b""))  # 400 Mpx: PIL refuses it while opening
    _expect_refusal(modnet_export, tmp_path, src, "too large to decode", "scale it down first")


def test_resolution_limit_follows_the_config_and_the_profile(modnet_export):
    from xopt.profiles import get_profile
    from xopt.runtime import load
    from xopt.models.modnet.pipeline import MattingPipeline, max_image_size

    assert max_image_size() == (4320, 7680)  # the default profile's [targets] max_height/max_width
    assert max_image_size(profile=get_profile("cpu")) == (4320, 7680)
    with load(modnet_export) as session:
        pipe = MattingPipeline(session, {"max_height": 64, "max_width": 96})
        assert pipe(_photo(64, 96)).shape == (64, 96)
        with pytest.raises(UserError, match="the image is 97x64 px, over the 96x64 px"):
            pipe(_photo(64, 97))


@pytest.mark.parametrize("name, content, needle", [
    ("picture.png", b"just some text\n", "is not a readable image"),
    ("picture.png", "truncated png", "is not a readable image"),
    ("picture.jpg", b"", "is not a readable image"),
    ("notes.txt", b"just some text\n", "is neither an image nor a video this build can read"),
    ("clip.mp4", bytes(range(256)) * 8, "is neither an image nor a video this build can read"),
])
def test_not_an_image(name, content, needle, modnet_export, tmp_path):
    (tmp_path / "in").mkdir()
    src = tmp_path / "in" / name
    if content == "truncated png":
        Image.fromarray(_photo()).save(src)
        content = src.read_bytes()[:200]
    src.write_bytes(content)
    _expect_refusal(modnet_export, tmp_path, src, name, needle)


@pytest.mark.parametrize("container, codec, pix_fmt", [("avi", "ffv1", "gray"), ("mkv", "ffv1", "gray"),
                                                       ("mp4", "libx264", "yuv420p")])
@pytest.mark.parametrize("output", ["matte.mp4", "frames"])
def test_video_without_frames(container, codec, pix_fmt, output, modnet_export, tmp_path):
    pytest.importorskip("av")
    (tmp_path / "in").mkdir()
    src = empty_video(tmp_path / "in" / f"empty.{container}", codec, pix_fmt)
    before = snapshot(src.parent)
    r = cli("run", "modnet", src, "-o", tmp_path / "out" / output, "--artifacts", modnet_export)
    line = assert_user_error(r, "empty." + container)
    assert "contains no video frames" in line or "has no video stream" in line
    assert not (tmp_path / "out" / output).exists() and not debris(tmp_path)
    assert snapshot(src.parent) == before
