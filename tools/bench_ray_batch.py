"""Throughput of `xopt run modnet FRAMES_DIR -o OUT --ray` against the same command without
--ray (one pipeline in this process), measured in one run on this machine.

    python tools/bench_ray_batch.py --frames 64 --size 512
    # -> benchmarks/results/ray-batch-modnet-<host>.json

Frames are a short synthetic clip: the astronaut portrait bundled with scikit-image, panned a few
pixels per frame (real photographic content, no download). Each mode runs as the real CLI in a
fresh process; the JSON records wall time (Ray start-up and actor start included), the steady
rate between the first and the last finished frame, the machine, its load before and after,
versions, and the commands. Weights are seeded-random (MODNet's architecture, not a trained
matte): speed does not depend on the values.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def frames(out: Path, n: int, size: int) -> None:
    import numpy as np
    from PIL import Image
    from skimage import data

    photo = Image.fromarray(data.astronaut()).resize((size + n * 2, size + n * 2))
    arr = np.asarray(photo)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(arr[i:i + size, 2 * i:2 * i + size]).save(out / f"frame{i:05d}.png")


def run_mode(art: Path, src: Path, out: Path, ray: bool, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "xopt.cli", "-q", "run", "modnet", str(src), "-o", str(out), "--artifacts",
           str(art), *(["--ray"] if ray else []), *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    record = json.loads((out / "batch.json").read_text())
    items = [v for v in record["items"].values() if v["status"] == "ok"]
    ts = sorted(v["t"] for v in items)
    steady = (len(ts) - 1) / (ts[-1] - ts[0]) if len(ts) > 1 and ts[-1] > ts[0] else None
    # the scratch folder is this run's own: named DIR so the result carries no path of this machine
    return {"command": " ".join(cmd[2:]).replace(str(src.parent) + "/", "DIR/"), "wall_s": round(wall, 2),
            "frames": len(items), "fps_wall": round(len(items) / wall, 3),
            "fps_steady": round(steady, 3) if steady else None, "first_frame_s": ts[0] if ts else None,
            "where": record["runs"][-1].get("where"),
            "processes": len({v["worker"] for v in items}),
            "per_frame_s_median": sorted(v["seconds"] for v in items)[len(items) // 2]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--size", type=int, default=512, help="frame height and width in pixels")
    ap.add_argument("--artifacts", default=None, help="a MODNet export (default: exported into a temp dir)")
    ap.add_argument("--workers", type=int, default=None, help="Ray actors (default: one per CPU)")
    ap.add_argument("--out", default=None, help="result JSON (default benchmarks/results/ray-batch-modnet-<host>.json)")
    args = ap.parse_args()

    from xopt.machine import describe

    with tempfile.TemporaryDirectory(prefix="xopt-bench-ray-") as tmp:
        tmp = Path(tmp)
        art = Path(args.artifacts) if args.artifacts else tmp / "art"
        if not args.artifacts:
            from xopt.export.pipeline import export_model

            export_model("modnet", ["fp32"], out_dir=art)
        frames(tmp / "frames", args.frames, args.size)
        load_before = os.getloadavg()
        seq = run_mode(art, tmp / "frames", tmp / "seq", False, [])
        ray = run_mode(art, tmp / "frames", tmp / "ray", True,
                       ["--workers", str(args.workers)] if args.workers else [])
        load_after = os.getloadavg()
        same = sorted(p.name for p in (tmp / "seq").glob("*.png")) == sorted(p.name for p in (tmp / "ray").glob("*.png"))
    m = describe()
    result = {
        "kind": "bench-ray-batch", "model": "modnet", "config": "default", "variant": "fp32", "backend": "ort-cpu",
        "weights": {"kind": "seeded-random", "seed": 0}, "frames": args.frames, "frame_size": [args.size, args.size],
        "machine": m, "load_average": {"before": [round(x, 2) for x in load_before],
                                       "after": [round(x, 2) for x in load_after]},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": "python tools/bench_ray_batch.py " + " ".join(sys.argv[1:]),
        "sequential": seq, "ray": ray, "same_outputs": same,
        # > 1: --ray is faster. Wall includes Ray's start-up; steady is the rate once frames flow
        "ratios": {"ray_speedup_wall": round(seq["wall_s"] / ray["wall_s"], 3),
                   "ray_speedup_steady": round(ray["fps_steady"] / seq["fps_steady"], 3)
                   if ray["fps_steady"] and seq["fps_steady"] else None},
    }
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"ray-batch-modnet-{m['hostname']}.json"
    from xopt.atomic import write_json

    write_json(out, result, force=True)
    print(json.dumps({k: result[k] for k in ("sequential", "ray", "ratios", "load_average")}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
