"""Peak memory of the ONNX path, one phase at a time, each in its own process.

    python -m xopt.fitting xopt.models.openfold.hostmeasure:point '{"config": {...}, "phase": "evo",
        "settings": {"precision": "fp32", "chunk_size": 64, "attn_chunk_size": 4, "storage": "fp16"},
        "n": 2500, "s": 512}'

`export` (a process with torch and OpenFold) writes the graphs of a one-block model at the
config's real widths into xopt's cache; `point` (a process with numpy and ONNX Runtime only)
loads them, allocates what the phase holds at N residues, and runs it once:
- "evo":       one Evoformer block on m [S, N, c_m] and z [N, N, c_z];
- "extra":     one extra-MSA block on the extra activations [S, N, c_e] and z;
- "structure": the structure module (pair layer norm and IPA bias, every IPA layer over query
               chunks, the final layer and heads) and the pTM head, with z held for recycling.
Blocks run one after another and hold nothing of each other, so the whole model's peak is the
largest phase plus the weights of all blocks (a constant the caller adds from the parameter
count). Peak = VmHWM after a reset minus the RSS before the phase's tensors existed.

Long chains ("sample_margin_mb" in the request). At real width one Evoformer block costs about
40 CPU minutes at N = 2,500 (a fit measures three phases for each setting at three lengths:
hours), nearly all of it in graph calls that repeat the same shapes chunk after chunk. Memory does not need them all: with ONNX
Runtime's arena off, a call's working set depends only on its input shapes, so its peak is the
host memory held when it starts plus that working set. `Sampled` therefore runs a graph for
real the first two times it sees a set of input shapes, and again whenever the process holds
more than the margin beyond what it held at that shape's last real call; every other call
returns new zero-filled outputs of the shapes the real call returned, written page by page as
ONNX Runtime writes its outputs, and nothing is kept between calls (the host loop still copies,
adds and stores every chunk, so every host array is written as in a full run). Checked against
full runs (tests/models/openfold/test_export.py at tiny width; the README at real width). The peak is then exact to the margin; the time
is projected (each shape's mean real-call time x its number of calls, plus the host work
measured) and labelled so.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

PHASES = ("evo", "extra", "structure")
NET_KEYS_EXCLUDED = ("preset", "recycles", "msa_depth", "extra_msa_depth", "trace_shape", "validation_shapes",
                     "chunk_size", "attn_chunk_size", "storage", "variant_chunk_size", "variant_attn_chunk_size")


def graph_dir(config: dict, precision: str) -> Path:
    from xopt.cache import cache_root

    net = {k: v for k, v in sorted(config.items()) if k not in NET_KEYS_EXCLUDED}
    key = hashlib.sha256(json.dumps({"net": net, "precision": precision, "v": 3}, sort_keys=True).encode()).hexdigest()
    return cache_root() / "openfold-measure" / key[:16]


def export(req: dict) -> dict:
    """Graphs of a model with one Evoformer and one extra-MSA block (fast random init)."""
    import warnings

    warnings.simplefilter("ignore")
    from xopt.export.onnx_export import to_onnx
    from xopt.models.openfold import SPEC
    from xopt.models.openfold.graphs import TRACE, graph_modules, sample_feed, signature, widths
    from xopt.models.openfold.measure import fast_init
    from xopt.models.openfold.network import openfold_config, representative_init_

    config, precision = dict(req["config"]), req["settings"].get("precision", "fp32")
    out = graph_dir(config, precision)
    if (out / "done.json").is_file():
        return json.loads((out / "done.json").read_text())
    of_cfg = openfold_config({**config, "evoformer_blocks": 1, "extra_msa_blocks": 1})
    from openfold.model.model import AlphaFold

    with fast_init():
        model = AlphaFold(of_cfg)
    representative_init_(model, 0)
    model.eval().requires_grad_(False)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for name, (module, table, kind, count, stack) in graph_modules(model, precision).items():
        names_in, names_out, axes = signature(table, kind, count is not None)
        feed = sample_feed(table, kind, TRACE, widths(of_cfg, stack), 0, count)
        to_onnx(module, feed, out / f"{name}.onnx.partial", names_in, names_out, axes, SPEC.opset, SPEC.exporter,
                SPEC.patchers)
        (out / f"{name}.onnx.partial").rename(out / f"{name}.onnx")
    info = {"dir": str(out), "export_s": round(time.perf_counter() - t0, 1),
            "widths": {"evo": widths(of_cfg, "evo"), "extra": widths(of_cfg, "extra")},
            "structure_blocks": int(of_cfg.model.structure_module.no_blocks)}
    (out / "done.json").write_text(json.dumps(info))
    return info


def _sessions(directory: Path, prefix: tuple, threads: int | None):
    from xopt.runtime.backends.ort import OrtSession

    opts = {"enable_cpu_mem_arena": False, "intra_op_num_threads": int(threads or 0)}
    return {p.name[:-5]: OrtSession(p, **opts) for p in sorted(directory.glob("*.onnx"))
            if p.name.startswith(prefix)}


class Sampled:
    """A session wrapper that computes only the calls that can raise the peak (see above)."""

    def __init__(self, name: str, session, margin_mb: float, stats: dict):
        self.name, self.session, self.margin, self.stats = name, session, float(margin_mb), stats

    def run(self, feeds: dict) -> dict:
        from xopt.runtime.memory import host_rss_mb

        key = (self.name,) + tuple((k, tuple(v.shape), str(v.dtype)) for k, v in sorted(feeds.items()))
        st = self.stats.setdefault(key, {"calls": 0, "real": 0, "seconds": 0.0, "rss": -1.0, "shapes": None})
        st["calls"] += 1
        rss = host_rss_mb()
        if st["real"] < 2 or rss > st["rss"] + self.margin:
            t0 = time.perf_counter()
            out = self.session.run(feeds)
            dt = time.perf_counter() - t0
            # a shape's first call sets up kernels: its later calls are what repeats
            st["first"] = st.get("first", dt)
            st["seconds"] += dt
            st["real"] += 1
            st["rss"] = max(st["rss"], rss)
            st["shapes"] = {k: (v.shape, v.dtype) for k, v in out.items()}
            return out
        import numpy as np

        out = {}
        for k, (shape, dtype) in st["shapes"].items():
            out[k] = np.empty(shape, dtype)
            out[k].fill(0)  # zero updates: values stay as they were, every page is written
        return out


def _projected_seconds(stats: dict, wall: float) -> tuple[float, int, int]:
    """(projected seconds of a full run, calls, real calls)."""
    real_s = sum(st["seconds"] for st in stats.values())
    full_s = 0.0
    for st in stats.values():
        if st["real"] > 1:
            full_s += st["first"] + (st["seconds"] - st["first"]) / (st["real"] - 1) * (st["calls"] - 1)
        elif st["real"]:
            full_s += st["seconds"] * st["calls"]
    return wall - real_s + full_s, sum(st["calls"] for st in stats.values()), sum(st["real"] for st in stats.values())


def _random(shape, dtype, rng):
    """A random array built a slab at a time (no full-size FP32 temporary for FP16 storage)."""
    import numpy as np

    out = np.empty(shape, dtype)
    for i in range(shape[0]):
        out[i] = rng.standard_normal(shape[1:], dtype=np.float32)
    return out


def _phase(phase: str, info: dict, sessions, settings: dict, n: int, s: int):
    """(what to run, its inputs) for a phase at N = n, S = s."""
    import numpy as np

    from xopt.models.openfold.host import STORAGE, StackRunner
    from xopt.models.openfold.hostfold import HostFold

    dt = STORAGE[settings.get("storage", "fp32")]
    chunk, attn = settings.get("chunk_size"), settings.get("attn_chunk_size")
    rng = np.random.default_rng(0)
    if phase in ("evo", "extra"):
        w = info["widths"][phase]
        runner = StackRunner(sessions, phase, 1, chunk, attn, settings.get("storage", "fp32"))

        def make():
            return (_random((s, n, w["m"]), dt, rng), _random((n, n, w["z"]), dt, rng),
                    np.ones((s, n), np.float32), np.ones((n, n), np.float32))
        return lambda args: runner(*args), make
    meta = {"blocks": {}, "structure_blocks": info["structure_blocks"], "ptm": True, "c_m": 0,
            "c_z": info["widths"]["evo"]["z"]}
    fold = HostFold(sessions, meta, chunk, attn, settings.get("storage", "fp32"))
    c_s = info["widths"]["evo"]["s"]

    def make():
        return (rng.standard_normal((n, c_s), dtype=np.float32), _random((n, n, meta["c_z"]), dt, rng),
                {"seq_mask": np.ones(n, np.float32), "aatype": rng.integers(0, 20, n).astype(np.int64)})

    def run(args):
        s_evo, z, f = args
        fold.structure(s_evo, z, f)
        fold.ptm(z, f["seq_mask"])
    return run, make


def point(req: dict) -> dict:
    """One phase at one N, in this (fresh) process: needs numpy and ONNX Runtime only."""
    from xopt.runtime.memory import host_peak_mb, host_rss_mb, reset_host_peak

    info = json.loads((Path(req["graph_dir"]) / "done.json").read_text())
    phase = req.get("phase", "evo")
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}")
    prefix = (f"{phase}.",) if phase != "structure" else ("sm_", "ipa_rows", "ptm_rows")
    sessions = _sessions(Path(req["graph_dir"]), prefix, req.get("threads"))
    run_small, make_small = _phase(phase, info, sessions, req["settings"], 8, 2)
    run_small(make_small())  # warm-up: thread pools and kernels initialise once per process
    margin, stats = req.get("sample_margin_mb"), {}
    if margin is not None:
        sessions = {k: Sampled(k, v, margin, stats) for k, v in sessions.items()}
    run, make = _phase(phase, info, sessions, req["settings"], int(req["n"]), int(req.get("s", 1)))
    base = host_rss_mb()
    args = make()
    inputs_mb = host_rss_mb() - base
    reset_host_peak()
    t0, c0 = time.perf_counter(), time.process_time()
    run(args)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    peak = host_peak_mb() - base
    import sys

    out = {"peak_mb": round(peak, 1), "inputs_mb": round(inputs_mb, 1), "seconds": round(seconds, 2),
           "cpu_seconds": round(cpu_seconds, 2), "phase": phase, "n": int(req["n"]), "s": int(req.get("s", 1)),
           "settings": req["settings"], "kind": "host-vmhwm", "device": "cpu", "threads": req.get("threads"),
           "torch_loaded": "torch" in sys.modules, "compute": "full"}
    if margin is not None:
        projected, calls, real = _projected_seconds(stats, seconds)
        # CPU time scales with wall time for the same work on the same threads
        out.update({"compute": f"sampled: {real} of {calls} graph calls run, peak exact to {margin:g} MB",
                    "measured_seconds": out["seconds"], "seconds": round(projected, 1),
                    "cpu_seconds": round(projected * cpu_seconds / max(seconds, 1e-9), 1), "time": "projected"})
    return out
