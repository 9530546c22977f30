"""End-to-end frames per second of a MODNet video run against the model's own (issue #27's
streamed-video target: end to end >= 0.85 x model-only on a 10 s 640x480 clip), with decoding,
inference and encoding overlapped (`xopt.prefetch`, what `xopt run modnet clip.mp4` does) and,
for comparison, one after another on the calling thread.

    python tools/bench_video_stream.py --seconds 10 --fps 25 --rounds 2
    # -> benchmarks/results/video-stream-modnet-<host>.json

The clip is the astronaut portrait bundled with scikit-image, panned a few pixels per frame and
encoded as H.264 (real photographic content, no download); weights are seeded-random (speed
does not depend on the values). One pipeline (FP32, ONNX Runtime CPU, its default threads) serves
every mode; rounds interleave the modes and the JSON holds medians. Model-only is the session's
own run on each frame's preprocessed tensor, the same frames, timed one by one.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.85


def make_clip(path: Path, seconds: float, fps: int, width: int, height: int) -> int:
    import av
    import numpy as np
    from PIL import Image
    from skimage import data

    n = int(round(seconds * fps))
    photo = np.asarray(Image.fromarray(data.astronaut()).resize((width + 2 * n, height + n)))
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(photo[i:i + height, 2 * i:2 * i + width]),
                                               format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return n


def end_to_end(pipe, clip: Path, dst: Path, streamed: bool) -> float:
    from xopt.models.modnet import video_io

    real = video_io.prefetched
    if not streamed:  # the same code path with the queues taken out: each stage waits for the others
        video_io.prefetched = lambda items, *a, **k: iter(items)
    try:
        t0 = time.perf_counter()
        pipe.process_file(clip, dst, force=True)
        return time.perf_counter() - t0
    finally:
        video_io.prefetched = real


def model_only(pipe, tensors: list) -> float:
    t0 = time.perf_counter()
    for x in tensors:
        pipe.session.run({"input": x})
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of the clip")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--artifacts", default=None, help="a MODNet export (default: exported into a temp dir)")
    ap.add_argument("--out", default=None, help="result JSON (default benchmarks/results/video-stream-modnet-<host>.json)")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))

    from xopt.machine import describe
    from xopt.models.modnet.pipeline import preprocess
    from xopt.models.modnet.video_io import read_frames
    from xopt.runtime import load_pipeline

    with tempfile.TemporaryDirectory(prefix="xopt-bench-video-") as tmp:
        tmp = Path(tmp)
        art = Path(args.artifacts) if args.artifacts else tmp / "art"
        if not args.artifacts:
            from xopt.export.pipeline import export_model

            export_model("modnet", ["fp32"], out_dir=art)
        clip = tmp / "clip.mp4"
        n = make_clip(clip, args.seconds, args.fps, width, height)
        pipe = load_pipeline(art, variant="fp32")
        tensors = [preprocess(f)[0] for f in read_frames(clip)]
        shape = list(tensors[0].shape)
        end_to_end(pipe, clip, tmp / "warm.mp4", True)  # sessions and codecs warm
        runs = {"streamed": [], "sequential": [], "model_only": []}
        for _ in range(args.rounds):
            runs["streamed"].append(end_to_end(pipe, clip, tmp / "s.mp4", True))
            runs["sequential"].append(end_to_end(pipe, clip, tmp / "q.mp4", False))
            runs["model_only"].append(model_only(pipe, tensors))
        pipe.close()
    fps = {k: round(n / statistics.median(v), 3) for k, v in runs.items()}
    ratio = round(fps["streamed"] / fps["model_only"], 3)
    m = describe()
    result = {
        "kind": "bench-video-stream", "model": "modnet", "variant": "fp32", "backend": "ort-cpu",
        "threads": "ONNX Runtime default (intra-op = physical cores)",
        "weights": {"kind": "seeded-random", "seed": 0}, "clip": {"frames": n, "fps": args.fps, "size": [width, height],
                                                                 "model_input": shape},
        "machine": m, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": "python tools/bench_video_stream.py " + " ".join(sys.argv[1:]),
        "seconds": {k: [round(x, 3) for x in v] for k, v in runs.items()}, "fps_median": fps,
        "ratios": {"streamed_vs_model_only": ratio,
                   "sequential_vs_model_only": round(fps["sequential"] / fps["model_only"], 3),
                   "streamed_vs_sequential": round(fps["streamed"] / fps["sequential"], 3)},
        "target": {"streamed_vs_model_only": TARGET, "met": ratio >= TARGET},
    }
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"video-stream-modnet-{m['hostname']}.json"
    from xopt.atomic import write_json

    write_json(out, result, force=True)
    print(json.dumps({k: result[k] for k in ("fps_median", "ratios", "target")}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
