"""MODNet's numpy side: the official demo's pre/post-processing, sample photographs, matte
drift metrics and the embeddable `MattingPipeline`. Imports no torch.

Preprocessing follows the official demo (ZHKKKe/MODNet, demo/image_matting/colab): RGB,
(x - 127.5) / 127.5, the "ref size 512" rule (scale the short side to 512 when the image is
smaller than 512 on both sides or larger on both; otherwise keep it), floor each side to a
multiple of 32 (the HR branch concatenates stride-2/4 features with the image and breaks on
other sizes), area interpolation there and back.

"Area" is OpenCV's INTER_AREA (the ONNX demo), implemented here with exact pixel-overlap
weights in numpy; the colab demo's torch `F.interpolate(mode="area")` (adaptive average
pooling) agrees with it for integer ratios. PIL's BOX filter is not used: it samples the
box at pixel centres, so at fractional ratios boundary pixels get weight 0 or 1 instead of
their overlap. Two guards the demo lacks: sides below 32 px after the rule (the demo would
feed a zero-sized tensor) and rule outputs beyond 32x the 512x512 area are user errors.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np

from xopt.errors import UserError
from xopt.models.modnet.image_io import check_size, max_image_size, to_rgb  # noqa: F401 (public here)
from xopt.runtime.pipeline import Pipeline

REF_SIZE = 512
MULTIPLE = 32
MIN_INPUT_SIDE = 2  # a 1-pixel line has no 2-D structure to matte, whatever the rule scales it to
# The rule blows thin small images up (1x1000 -> 512x512000); refuse what no device runs.
MAX_MODEL_PIXELS = 32 * REF_SIZE * REF_SIZE
GRAD_SIGMA = 1.4  # Gaussian-derivative sigma of the matting benchmarks' gradient error
NOISE_STEP = 1.0 / 127.5  # one grey level in the normalised input domain
# Real photographs bundled in the scikit-image wheel (no download): a portrait first.
SAMPLE_PHOTOS = ("astronaut", "camera", "coffee", "chelsea", "rocket", "stereo_motorcycle")


# ---------------------------------------------------------------- geometry and resizing

def model_size(h: int, w: int, ref_size: int = REF_SIZE) -> tuple[int, int]:
    """The official demo's inference size for an h x w image."""
    if min(h, w) < MIN_INPUT_SIDE:
        raise UserError(f"the image is {w}x{h} px, too small to matte",
                        f"pass an image at least {MIN_INPUT_SIDE} px on each side")
    rh, rw = h, w
    if max(h, w) < ref_size or min(h, w) > ref_size:
        if w >= h:
            rh, rw = ref_size, int(w / h * ref_size)
        else:
            rh, rw = int(h / w * ref_size), ref_size
    rh, rw = rh - rh % MULTIPLE, rw - rw % MULTIPLE
    if min(rh, rw) < MULTIPLE:
        raise UserError(f"the image is {w}x{h} px: its short side stays below {MULTIPLE} px after MODNet's "
                        f"resize rule", f"pad or crop it to at least {MULTIPLE} px on each side")
    if rh * rw > MAX_MODEL_PIXELS:
        raise UserError(f"the image is {w}x{h} px and MODNet's resize rule would run it at {rw}x{rh}",
                        "crop it to a less extreme aspect ratio or scale it down first")
    return rh, rw


@lru_cache(maxsize=64)
def _area_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and weights of exact area interpolation along one axis.

    Output pixel o covers [o, o+1) * n_in / n_out of the input; each input pixel contributes
    its overlap. This is OpenCV's INTER_AREA in both directions (its enlarging branch blends
    the two input pixels an output pixel straddles by the same overlap fractions).
    """
    scale = n_in / n_out
    start = np.arange(n_out, dtype=np.float64) * scale
    taps = int(np.ceil(scale)) + 1
    idx = np.floor(start).astype(np.int64)[:, None] + np.arange(taps)[None, :]
    overlap = np.minimum(start[:, None] + scale, idx + 1) - np.maximum(start[:, None], idx)
    weights = np.clip(overlap, 0.0, None)
    weights /= weights.sum(axis=1, keepdims=True)
    return np.minimum(idx, n_in - 1), weights.astype(np.float32)


def _resize_axis(x: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    if x.shape[axis] == n_out:
        return x
    idx, w = _area_taps(x.shape[axis], n_out)
    x = np.moveaxis(x, axis, 0)
    out = np.zeros((n_out,) + x.shape[1:], np.float32)
    expand = (slice(None),) + (None,) * (x.ndim - 1)
    for k in range(idx.shape[1]):
        out += w[:, k][expand] * x[idx[:, k]]
    return np.moveaxis(out, 0, axis)


def area_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an H x W (x C) array to `size` = (h, w) by area interpolation, in float32."""
    out = _resize_axis(np.asarray(image, np.float32), size[0], 0)
    return _resize_axis(out, size[1], 1)


# ---------------------------------------------------------------- images in and out

def normalise(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 on [0, 255] -> the graph's 1 x 3 x H x W input on [-1, 1]."""
    return np.ascontiguousarray(((rgb - 127.5) / 127.5).transpose(2, 0, 1)[None], np.float32)


def preprocess(image: Any, ref_size: int = REF_SIZE,
               max_size: tuple[int, int] | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """The graph input for `image` and the size its matte must be returned at."""
    rgb = to_rgb(image, max_size)
    h, w = rgb.shape[:2]
    return normalise(area_resize(rgb, model_size(h, w, ref_size))), (h, w)


def postprocess(matte: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[1, 1, h, w] (or h x w) model output -> H x W float32 matte in [0, 1]."""
    m = np.asarray(matte, np.float32).reshape(matte.shape[-2:])
    return np.clip(area_resize(m, size), 0.0, 1.0)


# ---------------------------------------------------------------- sample photographs

@lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    from xopt.extras import require

    data = require("skimage.data", "export", "the sample photographs calibration and profiling use")

    image = getattr(data, name)()
    image = image[0] if isinstance(image, tuple) else image  # stereo_motorcycle: (left, right, disparity)
    image = to_rgb(image).astype(np.uint8)
    image.setflags(write=False)
    return image


def sample_images(n: int) -> list[np.ndarray]:
    """`n` real photographs (H x W x 3 uint8) in a fixed order; past the bundled six, mirrored
    and progressively tighter centre crops of them, so no two are identical."""
    out = []
    for i in range(n):
        image = _photo(SAMPLE_PHOTOS[i % len(SAMPLE_PHOTOS)])
        round_ = i // len(SAMPLE_PHOTOS)
        if round_ % 2:
            image = image[:, ::-1]
        keep = max(0.5, 1.0 - 0.1 * (round_ // 2))
        h, w = image.shape[:2]
        ch, cw = int(h * keep), int(w * keep)
        out.append(image[(h - ch) // 2:(h - ch) // 2 + ch, (w - cw) // 2:(w - cw) // 2 + cw].copy())  # not the cache
    return out


def _fit(image: np.ndarray, size: tuple[int, int], rng: np.random.Generator | None = None) -> np.ndarray:
    """Crop `image` to the aspect of `size` (centred, or at a random offset) and area-resize it."""
    h, w = image.shape[:2]
    th, tw = size
    ch, cw = min(h, round(w * th / tw)), min(w, round(h * tw / th))
    y = (h - ch) // 2 if rng is None else int(rng.integers(0, h - ch + 1))
    x = (w - cw) // 2 if rng is None else int(rng.integers(0, w - cw + 1))
    return area_resize(image[y:y + ch, x:x + cw], (th, tw))


def _hw(size) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    if h % MULTIPLE or w % MULTIPLE or min(h, w) < MULTIPLE:
        raise UserError(f"MODNet input size {h}x{w} is not a multiple of {MULTIPLE}",
                        f"use heights and widths that are multiples of {MULTIPLE}")
    return h, w


def calibration_feeds(n: int, size=(512, 512)) -> list[dict]:
    """`n` graph feeds at `size` from the sample photographs (centre crops)."""
    hw = _hw(size)
    return [{"input": normalise(_fit(im, hw))} for im in sample_images(n)]


def _targets_hw(targets) -> tuple[int, int]:
    if hasattr(targets, "model_targets"):  # a DeviceProfile
        targets = targets.model_targets("modnet")
    targets = targets or {}
    return _hw((targets.get("height", REF_SIZE), targets.get("width", REF_SIZE)))


def _raw_at_targets(targets, n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    hw = _targets_hw(targets)
    return [_fit(im, hw, rng).round().astype(np.uint8) for im in sample_images(n)]


def profile_inputs(targets: Mapping[str, Any], n: int, seed: int = 0) -> list[dict]:
    """`n` feeds at the profile's MODNet height x width: photographs cropped at seeded offsets."""
    return [{"input": normalise(im.astype(np.float32))} for im in _raw_at_targets(targets, n, seed)]


def perturb(feed: Mapping[str, np.ndarray], rng: np.random.Generator) -> dict:
    """The same input with each value moved by -1, 0 or +1 grey level (the noise floor)."""
    x = feed["input"]
    noise = rng.integers(-1, 2, size=x.shape).astype(np.float32) * np.float32(NOISE_STEP)
    return {**feed, "input": np.clip(x + noise, -1.0, 1.0).astype(np.float32)}


# ---------------------------------------------------------------- drift metrics

@lru_cache(maxsize=4)
def _gauss_kernels(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    r = int(np.ceil(3 * sigma))
    x = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-x * x / (2 * sigma * sigma))
    g /= g.sum()
    d = -x * g
    d /= -(d * x).sum()  # unit response to a ramp: the magnitude reads in alpha per pixel
    return g, d


def _filter(a: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    r = len(kernel) // 2
    pad = [(0, 0)] * a.ndim
    pad[axis] = (r, r)
    p = np.pad(a, pad, mode="symmetric")
    n = a.shape[axis]
    out = np.zeros_like(a)
    for k, c in enumerate(kernel[::-1]):  # convolution, not correlation
        out += c * np.take(p, np.arange(k, k + n), axis=axis)
    return out


def gradient_magnitude(matte: np.ndarray, sigma: float = GRAD_SIGMA) -> np.ndarray:
    g, d = _gauss_kernels(sigma)
    m = np.asarray(matte, np.float64)
    gx = _filter(_filter(m, g, 0), d, 1)
    gy = _filter(_filter(m, g, 1), d, 0)
    return np.hypot(gx, gy)


def matte_metrics(ref: np.ndarray, test: np.ndarray) -> dict[str, float]:
    """Matting-benchmark errors of `test` against `ref` (two H x W mattes on [0, 1]).

    iou: foreground (alpha > 0.5) intersection over union, 1 when both are empty;
    sad: sum of absolute differences / 1000 (matting papers' unit); mse, mae: means;
    grad: sum of squared differences of Gaussian-derivative gradient magnitudes (sigma 1.4)
    / 1000. The benchmarks restrict SAD/grad to a trimap's unknown band; without ground
    truth there is no trimap, so these cover the whole image.
    """
    ref = np.asarray(ref, np.float64)
    test = np.asarray(test, np.float64)
    if ref.shape != test.shape:
        raise ValueError(f"matte shapes differ: {ref.shape} vs {test.shape}")
    a, b = ref > 0.5, test > 0.5
    union = np.logical_or(a, b).sum()
    diff = test - ref
    grad = gradient_magnitude(test) - gradient_magnitude(ref)
    return {"iou": float(np.logical_and(a, b).sum() / union) if union else 1.0,
            "sad": float(np.abs(diff).sum() / 1000.0), "mse": float(np.mean(diff * diff)),
            "mae": float(np.mean(np.abs(diff))), "grad": float(np.sum(grad * grad) / 1000.0)}


def drift(ref_outputs: Mapping[str, np.ndarray], test_outputs: Mapping[str, np.ndarray],
          feed: Mapping[str, np.ndarray] | None = None) -> dict[str, float]:
    """`matte_metrics` per image of the [B, 1, H, W] "output", averaged over the batch."""
    ref = np.asarray(ref_outputs["output"])
    test = np.asarray(test_outputs["output"])
    ref, test = ref.reshape((-1,) + ref.shape[-2:]), test.reshape((-1,) + test.shape[-2:])
    per = [matte_metrics(r, t) for r, t in zip(ref, test)]
    return {k: float(np.mean([p[k] for p in per])) for k in per[0]}


# ---------------------------------------------------------------- the pipeline

class MattingPipeline(Pipeline):
    """Image (path, PIL image, numpy array, video frame) in, H x W float32 alpha matte out."""
    progress_unit = "frames"

    input_kinds = ("image", "video")

    def __init__(self, session, config: dict | None = None, variant: dict | None = None):
        super().__init__(session, config, variant)
        _check_graph(session)
        self.max_size = max_image_size(self.config)

    def __call__(self, image: Any) -> np.ndarray:
        x, size = preprocess(image, int(self.config.get("ref_size", REF_SIZE)), self.max_size)
        return postprocess(self.session.run({"input": x})["output"], size)

    def frames(self, frames: Iterable[Any]) -> Iterator[np.ndarray]:
        for frame in frames:
            yield self(frame)

    def raw_samples(self, n: int, targets: dict, seed: int = 0) -> list[np.ndarray]:
        return _raw_at_targets(targets, n, seed)

    @classmethod
    def check_input(cls, path: Path) -> dict:
        """An image PIL identifies, or a video with a decodable first frame."""
        from xopt.models.modnet.image_io import inspect

        return inspect(Path(path))

    @classmethod
    def default_output(cls, src: Path, root: Path) -> Path:
        """A still's matte as root/<stem>.png; a video's as root/<stem>.mp4 (a PNG sequence would
        replace the whole folder, mattes of other files included)."""
        from xopt.models.modnet.image_io import _is_image

        return Path(root) if _is_image(Path(src)) else Path(root) / f"{Path(src).stem}.mp4"

    def outputs_for(self, src: Path, dst: Path) -> list[Path] | None:
        """A still's matte (dst, or dst/<stem>.png for a folder) or a video matte file; a PNG
        sequence is a folder replaced whole, so None."""
        from xopt.models.modnet.image_io import _is_image
        from xopt.models.modnet.video_io import VIDEO_OUT

        src, dst = Path(src), Path(dst)
        if not src.is_file():
            return None  # process_file names the problem
        if _is_image(src):
            return [dst / f"{src.stem}.png" if dst.is_dir() or not dst.suffix else dst]
        return [dst] if dst.suffix.lower() in VIDEO_OUT else None

    def process_file(self, src, dst, force: bool = False,
                     progress: Callable[[Iterable], Iterable] | None = None) -> list[Path]:
        from xopt.models.modnet.image_io import process_file

        return process_file(self, Path(src), Path(dst), force, progress)


def _check_graph(session) -> None:
    """A session on some other graph (a bare .onnx handed in by the caller) fails here, with
    what it takes, instead of deep inside the runtime on the first frame."""
    shapes = getattr(session, "input_shapes", {})  # empty where the backend does not say
    shape = shapes.get("input")
    shape_ok = shape is None or (len(shape) == 4 and (shape[1] == 3 or not isinstance(shape[1], int)))
    if session.input_names != ["input"] or "output" not in session.output_names or not shape_ok:
        got = ", ".join(f"{n} {shapes.get(n, '')}".strip() for n in session.input_names)
        raise UserError(f"{session.path} is not a MODNet graph: it takes {got or 'no inputs'} and gives "
                        f"{', '.join(session.output_names) or 'no outputs'}",
                        "pass a MODNet export (input 'input' [N, 3, H, W], output 'output')")
