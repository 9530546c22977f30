"""Benchmark: xopt's Demucs against the PyPI `demucs-onnx` peer and demucs' PyTorch apply_model.

One run, one machine, the same weights (seeded htdemucs unless --checkpoint) and the same
normalised inputs: a 7.8 s segment and a 30 s synthetic track.

- xopt: FP32 ONNX core on ONNX Runtime + numpy STFT/iSTFT/overlap-add (SeparationPipeline)
- peer: demucs-onnx 0.3.x, exported by its own patcher (STFT/iSTFT as convolutions in the
  graph, fixed 7.8 s), run through its own chunked overlap-add
- torch: eager PyTorch FP32: the model's forward on the segment, demucs.apply.apply_model
  (split, overlap 0.25, no shifts) on the track

Each system lives in its own worker process (every one stays under a few GB; together in
one process the ORT arenas and the peer's export peaked at 14.6 GB). The workers run in
turn, round-robin (xopt, peer, torch, xopt, ...), so a change in machine load hits all
three alike; medians are reported. Parity is SDR (dB) against PyTorch.

    python -m xopt.models.demucs.bench [--out benchmarks/results/demucs-cpu.json] [--repeats 3]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGETS = {"vs_peer": 1.2, "vs_torch": 1.5, "parity_sdr_db": 60.0}
PEER_SAMPLES = 343980  # demucs-onnx hard-wires 7.8 s at 44.1 kHz


# --- the three systems, each built inside its worker ------------------------------------------

def _ort_session(path):
    """The same ONNX Runtime settings for xopt and the peer: ORT_ENABLE_ALL (what the peer's
    inference uses), default threads, no CPU arena and no memory pattern: with them each
    session holds its rounded-up high-water mark (xopt 5.7 GB, the peer over 7 GB) and this
    machine is shared."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.enable_cpu_mem_arena = False
    so.enable_mem_pattern = False
    so.log_severity_level = 3
    return ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])


class _Core:
    """xopt's Session interface (run feeds -> named outputs) over a plain ORT session."""

    def __init__(self, path):
        self.sess = _ort_session(path)
        self.names = [o.name for o in self.sess.get_outputs()]
        self.input_shapes = {i.name: list(i.shape) for i in self.sess.get_inputs()}

    def run(self, feeds):
        return dict(zip(self.names, self.sess.run(self.names, feeds)))


def _make_xopt(opts, variant="fp32"):
    from xopt.manifest import load
    from xopt.models.demucs import pipeline as host

    manifest = load(opts["artifacts"])
    core = _Core(str(manifest.path_of(variant)))
    cfg = host.settings(manifest.config, core)
    return {"segment": lambda x: host.separate_segments(core, x[None], cfg["nfft"], cfg["spectral"])[0],
            "track": lambda x: host.separate(core, x, cfg)}


def _make_peer(opts):
    from demucs_onnx.inference import _chunked_separate_single

    sess = _ort_session(opts["peer_onnx"])
    sources = opts["sources"]
    return {"segment": lambda x: sess.run(["stems"], {"mix": x[None]})[0][0],
            "track": lambda x: np.stack(list(_chunked_separate_single(sess, sources, x, progress=False).values()))}


def _make_torch(opts):
    import torch
    from demucs.apply import apply_model

    model = _build(opts).extra["model"]

    def segment(x):
        with torch.no_grad():
            return model(torch.from_numpy(x)[None])[0].numpy()

    def track(x):
        with torch.no_grad():
            return apply_model(model, torch.from_numpy(x)[None], shifts=0, split=True, overlap=0.25)[0].numpy()

    return {"segment": segment, "track": track}


def _build(opts):
    from xopt.registry import get_model

    return get_model("demucs").build(checkpoint=opts["checkpoint"], config=opts["config"], seed=opts["seed"])


def _export_peer(opts, conn):
    """The peer's own export path (its patcher, its legacy-exporter call), in a process of its own."""
    from demucs_onnx.export.exporter import _export_one
    from demucs_onnx.export.patch import patch_htdemucs_for_onnx

    from xopt.runtime.memory import host_peak_mb

    model = _build(opts).extra["model"]
    t0 = time.perf_counter()
    _export_one(patch_htdemucs_for_onnx(model.eval()), Path(opts["peer_onnx"]), n_samples=PEER_SAMPLES, opset=17,
                verbose=False)
    conn.send({"seconds": time.perf_counter() - t0, "peak_mb": host_peak_mb()})


def _worker(kind, opts, conn):
    from xopt.runtime.memory import host_peak_mb

    system = {"xopt": _make_xopt, "xopt-int8": lambda o: _make_xopt(o, "int8"), "peer": _make_peer,
              "torch": _make_torch}[kind](opts)
    conn.send("ready")
    while True:
        msg = conn.recv()
        if msg is None:
            conn.send({"peak_mb": host_peak_mb()})
            return
        part, x = msg
        t0 = time.perf_counter()
        out = system[part](x)
        conn.send((time.perf_counter() - t0, np.asarray(out, dtype=np.float32)))


# --- orchestration --------------------------------------------------------------------------

def _spawn(ctx, target, *args):
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=target, args=(*args, child), daemon=True)
    proc.start()
    return proc, parent


def _sdr_vs(ref: np.ndarray, est: np.ndarray) -> dict:
    from xopt.models.demucs.sdr import per_source

    scores = per_source(ref[None], est[None])
    return {"mean": round(float(scores.mean()), 2), "min": round(float(scores.min()), 2)}


def _rounds(workers, part, x, repeats):
    """One warm-up then `repeats` timed calls per system, round-robin; -> (times, outputs)."""
    times = {k: [] for k in workers}
    outs = {}
    for r in range(repeats + 1):
        for name, (_, conn) in workers.items():
            conn.send((part, x))
            dt, out = conn.recv()
            outs[name] = out
            if r:
                times[name].append(dt)
    return times, outs


def _summary(times, outs, seconds):
    lat = {k: round(1e3 * statistics.median(v), 1) for k, v in times.items()}
    return {"seconds": seconds, "latency_ms": lat,
            "samples_ms": {k: [round(1e3 * t, 1) for t in v] for k, v in times.items()},
            "real_time_factor": {k: round(seconds / (v / 1e3), 3) for k, v in lat.items()},
            "parity_sdr_db_vs_torch": {k: _sdr_vs(outs["torch"], outs[k]) for k in outs if k != "torch"},
            **({"int8_vs_fp32_sdr_db": _sdr_vs(outs["xopt"], outs["xopt-int8"])} if "xopt-int8" in outs else {})}


def _int8_verdict(manifest, result) -> dict:
    """The int8 variant against xopt FP32 in the same rounds, judged by the bound its export's gate met."""
    facts = next(p["facts"] for p in manifest.variant("int8")["passes"] if p["name"] == "int8-gated")
    gate = facts["gate"]
    out = {"speedup_vs_fp32": {}, "sdr_min_db_vs_fp32": {}}
    for part in ("segment", "track"):
        lat = result[part]["latency_ms"]
        out["speedup_vs_fp32"][part] = round(lat["xopt"] / lat["xopt-int8"], 3)
        out["sdr_min_db_vs_fp32"][part] = result[part]["int8_vs_fp32_sdr_db"]["min"]
    bound = gate.get("bound")
    return {**out, "gate": gate.get("text"), "bound_db": bound, "groups": facts.get("groups"),
            "fp32_groups": len(facts.get("fp32_groups", [])),
            "within_gate": bound is not None and all(v >= bound for v in out["sdr_min_db_vs_fp32"].values())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--config", default="htdemucs")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--artifacts", default=None, help="reuse an xopt export directory (default: export to a temp dir)")
    p.add_argument("--track-seconds", type=float, default=30.0)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per system for the segment")
    p.add_argument("--track-repeats", type=int, default=1, help="timed runs per system for the track")
    p.add_argument("--no-peer", action="store_true", help="skip demucs-onnx")
    p.add_argument("--int8", action="store_true", help="also time xopt's gated int8 variant (exported if missing) "
                   "against xopt FP32, and check it within the gate its export met")
    p.add_argument("--out", default=None, help="write the JSON result here (e.g. benchmarks/results/demucs-cpu.json)")
    p.add_argument("--force", action="store_true")
    args = p.parse_args(argv)

    from xopt.atomic import write_json
    from xopt.export.pipeline import export_model
    from xopt.machine import describe
    from xopt.models.demucs import dsp
    from xopt.models.demucs import pipeline as host
    from xopt.models.demucs.synth import generate

    if args.out and Path(args.out).exists() and not args.force:
        print(f"{args.out} exists; pass --force", file=sys.stderr)
        return 1
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="bench-demucs-") as tmp:
        art = Path(args.artifacts) if args.artifacts else Path(tmp) / "xopt"
        manifest = export_model("demucs", ["fp32"] + (["int8"] if args.int8 else []), out_dir=art,
                                checkpoint=args.checkpoint, config=args.config, seed=args.seed)
        cfg = host.settings(manifest.config)
        seg = cfg["segment_samples"]
        opts = {"artifacts": str(art), "checkpoint": args.checkpoint, "config": args.config, "seed": args.seed,
                "peer_onnx": str(Path(tmp) / "peer.onnx"), "sources": list(cfg["sources"])}
        peer = not args.no_peer and seg == PEER_SAMPLES
        facts = {}
        if peer:
            proc, conn = _spawn(ctx, _export_peer, opts)
            facts["peer_export"] = conn.recv()
            proc.join()
            facts["peer_onnx_mb"] = round(Path(opts["peer_onnx"]).stat().st_size / 2**20, 1)
        kinds = ["xopt"] + (["xopt-int8"] if args.int8 else []) + (["peer"] if peer else []) + ["torch"]
        workers = {k: _spawn(ctx, _worker, k, opts) for k in kinds}
        for _, conn in workers.values():
            assert conn.recv() == "ready"

        mix, _ = generate(seg / 44100, seed=args.seed + 1)
        mean, std = dsp.track_stats(mix)
        segment = ((mix - mean) / std).astype(np.float32)
        result = {"segment": _summary(*_rounds(workers, "segment", segment, args.repeats), seg / 44100)}
        track, _ = generate(args.track_seconds, seed=args.seed + 2)
        tmean, tstd = dsp.track_stats(track)
        track = ((track - tmean) / tstd).astype(np.float32)
        result["track"] = _summary(*_rounds(workers, "track", track, args.track_repeats), args.track_seconds)
        memory = {}
        for name, (proc, conn) in workers.items():
            conn.send(None)
            memory[name] = round(conn.recv()["peak_mb"], 1)
            proc.join()

    ratios = {part: {f"vs_{k}": round(result[part]["latency_ms"][k] / result[part]["latency_ms"]["xopt"], 3)
                     for k in result[part]["latency_ms"] if k not in ("xopt", "xopt-int8")} for part in ("segment", "track")}
    if args.int8:
        facts["int8"] = _int8_verdict(manifest, result)
    parity = min(result[p]["parity_sdr_db_vs_torch"]["xopt"]["min"] for p in ("segment", "track"))
    verdict = {"vs_torch": all(r["vs_torch"] >= TARGETS["vs_torch"] for r in ratios.values()),
               "vs_peer": all(r["vs_peer"] >= TARGETS["vs_peer"] for r in ratios.values()) if peer else None,
               "parity": parity > TARGETS["parity_sdr_db"]}
    report = {"kind": "bench", "model": "demucs", "config": args.config,
              "weights": {"kind": "checkpoint", "path": args.checkpoint} if args.checkpoint
              else {"kind": "seeded-random", "seed": args.seed},
              "machine": describe(), "targets": TARGETS, "ratios": ratios, "verdict": verdict,
              "peak_rss_mb": memory, **facts, **result,
              "notes": "ratios > 1: xopt faster. Same ONNX Runtime settings for xopt and the peer (ORT_ENABLE_ALL, "
                       "default threads, CPU arena and memory pattern off); torch eager with its default threads; shifts=0 "
                       "everywhere; one worker process per system, run round-robin; medians after one warm-up"}
    for part in ("segment", "track"):
        lat = result[part]["latency_ms"]
        print(f"{part} ({result[part]['seconds']:.1f} s audio): "
              + ", ".join(f"{k} {v / 1e3:.2f} s" for k, v in lat.items())
              + f"; speed-up {ratios[part]}; parity SDR vs torch {result[part]['parity_sdr_db_vs_torch']}")
    print(f"peak RSS MB {memory}; verdict {verdict}")
    if args.int8:
        i8 = facts["int8"]
        print(f"int8 (gated dynamic, {i8['fp32_groups']} of {i8['groups']} groups FP32): "
              f"{i8['speedup_vs_fp32']} x xopt FP32; worst-stem SDR vs xopt FP32 {i8['sdr_min_db_vs_fp32']} dB "
              f"(gate {i8['gate']}): {'within' if i8['within_gate'] else 'OUTSIDE'} its gate")
    if args.out:
        write_json(args.out, report, force=args.force)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
