"""Any ONNX model, profiled the way trtexec and Polygraphy do it: no model spec, inputs from the
graph signature (or a Polygraphy inputs file), warm-up, latency percentiles, memory, and a
per-node time breakdown from ONNX Runtime's profiler; `compare` adds the tensor drift of a second
graph on the same inputs. Each graph runs in a process of its own (analysis/isolate.py).
"""
from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from xopt.errors import UserError
from xopt.extras import require

_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
           "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
           "tensor(bool)": np.bool_}
DEFAULT_RANGE = (0.0, 1.0)  # Polygraphy's default --val-range


def parse_shapes(text: str | None) -> dict[str, list[int]]:
    """`name:1x3x512x512,other:4x16` (trtexec's --shapes) -> {name: [dims]}."""
    out: dict[str, list[int]] = {}
    for item in [t for t in (text or "").split(",") if t.strip()]:
        name, sep, dims = item.strip().rpartition(":")
        if not sep or not name or not re.fullmatch(r"\d+(x\d+)*", dims):
            raise UserError(f"bad --shapes entry {item!r}", "write NAME:DxDxD, e.g. --shapes input:1x3x512x512")
        out[name] = [int(d) for d in dims.split("x")]
    return out


def parse_ranges(text: str | None) -> dict[str, tuple[float, float]]:
    """`name:[lo,hi];other:[lo,hi]` or `[lo,hi]` for every input (Polygraphy's --val-range)."""
    out: dict[str, tuple[float, float]] = {}
    for item in [t for t in (text or "").split(";") if t.strip()]:
        m = re.fullmatch(r"\s*(?:([^:\[]+):)?\[\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*\]\s*", item)
        if not m or float(m.group(2)) > float(m.group(3)):
            raise UserError(f"bad --val-range entry {item!r}", "write [LO,HI] or NAME:[LO,HI] with LO <= HI")
        out[(m.group(1) or "*").strip()] = (float(m.group(2)), float(m.group(3)))
    return out


def signature(path: Path) -> list[dict]:
    """[{name, dtype, shape}] of the graph's real inputs (initializers excluded), read with onnx."""
    onnx = require("onnx", "onnx", "xopt profile/compare read the graph's inputs with it")

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends: one line for the user
        raise UserError(f"{path} is not a readable ONNX model ({type(exc).__name__})", "pass an .onnx file") from exc
    inits = {i.name for i in model.graph.initializer}
    out = []
    for i in model.graph.input:
        if i.name in inits:
            continue
        t = i.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
        out.append({"name": i.name, "dtype": f"tensor({onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name})"
                    .replace("float32", "float").replace("float64", "double"), "shape": dims})
    return out


def make_feeds(sig: Sequence[Mapping], shapes: Mapping[str, list[int]], ranges: Mapping[str, tuple], n: int,
               seed: int) -> list[dict[str, np.ndarray]]:
    unknown = sorted(set(shapes) - {s["name"] for s in sig})
    if unknown:
        raise UserError(f"--shapes names {', '.join(unknown)}, which the graph does not take",
                        f"its inputs are {', '.join(s['name'] for s in sig)}")
    rng = np.random.default_rng(seed)
    feeds: list[dict[str, np.ndarray]] = [{} for _ in range(n)]
    for s in sig:
        shape = shapes.get(s["name"])
        dynamic = [str(d) for d in s["shape"] if not isinstance(d, int) or d <= 0]
        if shape is None and dynamic:
            raise UserError(f"input {s['name']} has dynamic dimensions {', '.join(dynamic)}",
                            f"pass --shapes {s['name']}:" + "x".join(str(d) if isinstance(d, int) and d > 0 else "N"
                                                                       for d in s["shape"]))
        shape = shape or [int(d) for d in s["shape"]]
        if len(shape) != len(s["shape"]) or any(isinstance(d, int) and d > 0 and d != g
                                                for d, g in zip(s["shape"], shape)):
            raise UserError(f"--shapes {s['name']}:{'x'.join(map(str, shape))} does not match the graph's "
                            f"{s['name']} {s['shape']}", "keep the static dimensions as the graph has them")
        dtype = _DTYPES.get(s["dtype"])
        if dtype is None:
            raise UserError(f"input {s['name']} is {s['dtype']}, which xopt cannot generate",
                            "pass your own inputs with --inputs FILE (Polygraphy JSON)")
        lo, hi = ranges.get(s["name"], ranges.get("*", DEFAULT_RANGE if dtype != np.bool_ else (0, 1)))
        for f in feeds:
            if np.issubdtype(dtype, np.integer) or dtype == np.bool_:
                f[s["name"]] = rng.integers(int(lo), int(hi) + 1, size=shape).astype(dtype)
            else:
                f[s["name"]] = rng.uniform(lo, hi, size=shape).astype(dtype)
    return feeds


def node_breakdown(profile_json: Path, runs: int, top: int = 15) -> dict:
    """Top operator types and top nodes by total kernel time in an ONNX Runtime profile."""
    events = json.loads(profile_json.read_text(encoding="utf-8"))
    by_node: dict[str, float] = defaultdict(float)
    by_op: dict[str, float] = defaultdict(float)
    op_of: dict[str, str] = {}
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        node = e["name"][: -len("_kernel_time")]
        op = (e.get("args") or {}).get("op_name", "?")
        by_node[node] += e.get("dur", 0) / 1e3
        by_op[op] += e.get("dur", 0) / 1e3
        op_of[node] = op
    total = sum(by_op.values()) or 1.0
    per = max(1, runs)
    return {"runs": runs, "total_ms_per_run": total / per,
            "top_ops": [{"op": k, "ms_per_run": v / per, "share": v / total}
                        for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])[:top]],
            "top_nodes": [{"node": k, "op": op_of[k], "ms_per_run": v / per, "share": v / total}
                          for k, v in sorted(by_node.items(), key=lambda kv: -kv[1])[:top]]}


def measure_graph(path: str, feeds: list[dict], frames: int, warmup: int, threads: int | None,
                  progress=None, refs: list[dict] | None = None) -> dict:
    """One graph in this process: cold-start load, first run, warm-up, timed frames, peak memory,
    then a separate profiling session for the per-node breakdown (profiling adds overhead)."""
    import tempfile

    from xopt.compare import compare, worst
    from xopt.extras import onnxruntime
    from xopt.runtime.backends.ort import session_options
    from xopt.runtime.memory import MemoryMonitor
    from xopt.stats import latency_summary

    ort = onnxruntime()
    with MemoryMonitor() as mon:
        so, _ = session_options(ort, intra_op_num_threads=threads or 0)
        t0 = time.perf_counter()
        sess = ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])
        load_ms = (time.perf_counter() - t0) * 1e3
        names = [o.name for o in sess.get_outputs()]
        t0 = time.perf_counter()
        outs = [dict(zip(names, sess.run(None, feeds[0])))]
        first_ms = (time.perf_counter() - t0) * 1e3
        outs += [dict(zip(names, sess.run(None, f))) for f in feeds[1:]]
        for i in range(warmup):
            sess.run(None, feeds[i % len(feeds)])
        times = []
        for i in range(frames):
            t0 = time.perf_counter()
            sess.run(None, feeds[i % len(feeds)])
            times.append((time.perf_counter() - t0) * 1e3)
            if progress:
                progress("frames", i + 1, frames)
        providers = sess.get_providers()
        del sess
    runs = max(1, min(frames, 5))
    with tempfile.TemporaryDirectory(prefix="xopt-ortprof-") as tmp:
        so, _ = session_options(ort, intra_op_num_threads=threads or 0, enable_profiling=True)
        so.profile_file_prefix = str(Path(tmp) / "ort")
        prof = ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])
        prof.run(None, feeds[0])  # the first run's allocations are not the steady state
        for i in range(runs):
            prof.run(None, feeds[i % len(feeds)])
        breakdown = node_breakdown(Path(prof.end_profiling()), runs + 1)
    result = {"latency_ms": latency_summary(times), "warmup_ms": {"load": load_ms, "first_inference": first_ms,
                                                                 "warmup_runs": warmup},
              "memory": mon.result, "providers": providers, "breakdown": breakdown,
              "outputs": {n: list(np.asarray(v).shape) for n, v in outs[0].items()}}
    if refs is not None:
        result["drift"] = {"tensor": worst([compare(r, o) for r, o in zip(refs, outs)])}
    return {"result": result, "outs": outs}


def profile_onnx(paths: Sequence[str | Path], shapes: str | None = None, val_range: str | None = None,
                 inputs_file: str | Path | None = None, frames: int = 20, warmup: int = 1,
                 threads: int | None = None, profile_name: str | None = None, seed: int = 0,
                 command: str = "", log: Path | None = None) -> dict:
    """A profile report (kind "profile", no model spec) of one graph, or of several on the same
    inputs with the drift of each against the first (`xopt compare A B`)."""
    import tempfile

    from xopt.analysis.isolate import ChildOutOfMemory, run_job, save_feeds
    from xopt.machine import describe
    from xopt.profiles import get_profile
    from xopt.report_schema import SCHEMA_VERSION
    from xopt import progress

    if frames < 1:
        raise UserError(f"--frames {frames} measures nothing", "pass --frames 1 or more")
    paths = [Path(p) for p in paths]
    for p in paths:
        if not p.is_file():
            raise UserError(f"{p} is not a file", "pass an existing .onnx file")
    profile = get_profile(profile_name)
    sig = signature(paths[0])
    for p in paths[1:]:
        other = signature(p)
        if [s["name"] for s in other] != [s["name"] for s in sig]:
            raise UserError(f"{p} takes inputs {[s['name'] for s in other]}, {paths[0]} takes "
                            f"{[s['name'] for s in sig]}", "compare graphs with the same inputs")
    if inputs_file:
        from xopt.runtime.polygraphy_io import load_inputs

        feeds = load_inputs(inputs_file)
    else:
        feeds = make_feeds(sig, parse_shapes(shapes), parse_ranges(val_range), max(1, min(frames, 4)), seed)
    log = log or Path(tempfile.gettempdir()) / "xopt-onnx-profile.log"
    results = []
    with tempfile.TemporaryDirectory(prefix="xopt-onnx-") as tmp:
        work = Path(tmp)
        save_feeds(work / "feeds.npz", feeds)
        for i, p in enumerate(paths):
            job = {"path": str(p), "frames": frames, "warmup": warmup, "threads": threads,
                   "feeds": str(work / "feeds.npz"), "outs": str(work / f"outs{i}.npz"),
                   "refs": str(work / "outs0.npz") if i else None}
            try:
                with progress.bar(f"{p.name}: {frames} frames on ort-cpu") as bar:
                    res = run_job("onnx", job, work, log, on_progress=bar)
            except ChildOutOfMemory as exc:
                res = {"error": f"does not fit in memory at these shapes ({exc.why})", "memory":
                       {"kind": "out-of-memory", "peak_mb": None}, "latency_ms": {}}
            mem = res["memory"]
            checks = [{"name": "memory within budget [host RSS, a proxy for VRAM]" if mem.get("kind") == "host-rss"
                       else "memory within budget", "passed": bool(mem.get("peak_mb") is not None
                                                                   and mem["peak_mb"] <= profile.budget_mb),
                       "value": mem.get("peak_mb"), "limit": round(profile.budget_mb, 1), "unit": "MB"}]
            p50 = (res.get("latency_ms") or {}).get("p50")
            results.append({"variant": p.stem, "precision": _precision(p), "backend": "ort-cpu",
                            "artifact": str(p), "error": res.get("error"), "drift": res.get("drift") or {},
                            "latency_ms": res.get("latency_ms") or {}, "latency_e2e_ms": None,
                            "warmup_ms": res.get("warmup_ms") or {}, "memory": mem,
                            "providers": res.get("providers"), "fps": 1e3 / p50 if p50 else None, "fps_e2e": None,
                            "breakdown": res.get("breakdown"), "outputs": res.get("outputs"),
                            "budget": {"passed": all(c["passed"] for c in checks), "checks": checks}})
    return {
        "schema_version": SCHEMA_VERSION, "kind": "profile", "model": paths[0].name,
        "weights": {"kind": "unknown", "note": "an ONNX file given by the user: xopt did not build it"},
        "config": {}, "covers": "the whole graph as given", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command or "xopt profile " + " ".join(map(str, paths)), "machine": describe(),
        "profile": profile.to_json(),
        "settings": {"backend": "ort-cpu", "frames": frames, "warmup_runs": warmup, "seed": seed,
                     "generic": True, "inputs": {k: list(v.shape) for k, v in feeds[0].items()},
                     "input_dtypes": {k: str(v.dtype) for k, v in feeds[0].items()},
                     "val_range": val_range or f"[{DEFAULT_RANGE[0]:g},{DEFAULT_RANGE[1]:g}]",
                     "inputs_file": str(inputs_file) if inputs_file else None,
                     "threads": {"intra_op": threads or "onnxruntime default (one per physical core)", "inter_op": 1},
                     "reference": f"{paths[0].name} (drift of each other graph against it)" if len(paths) > 1 else None,
                     "isolation": "each graph in a process of its own", "log": str(log)},
        "results": results, "extra": {"drift_keys": [], "breakdown_markdown": True},
    }


def _precision(path: Path) -> str:
    """The graph's dominant float type, from its initializers (fp32 / fp16 / int8 with Q/DQ)."""
    onnx = require("onnx", "onnx", "xopt profile/compare read the graph's precision with it")

    model = onnx.load(str(path), load_external_data=False)
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "MatMulInteger") for n in model.graph.node):
        return "int8"
    counts: dict[int, int] = defaultdict(int)
    for t in model.graph.initializer:
        counts[t.data_type] += 1
    top = max(counts, key=counts.get) if counts else onnx.TensorProto.FLOAT
    return {onnx.TensorProto.FLOAT16: "fp16", onnx.TensorProto.BFLOAT16: "bf16"}.get(top, "fp32")


def breakdown_markdown(result: dict, top: int = 10) -> list[str]:
    """The per-node time table of one result, for report.md."""
    b = result.get("breakdown")
    if not b:
        return []
    lines = [f"**{result['variant']}** — ONNX Runtime profiler, {b['total_ms_per_run']:.3g} ms of kernels per run",
             "", "| operator | ms/run | share |", "|---|---|---|"]
    lines += [f"| {o['op']} | {o['ms_per_run']:.3g} | {o['share']:.0%} |" for o in b["top_ops"][:top]]
    lines += ["", "| node | operator | ms/run | share |", "|---|---|---|---|"]
    lines += [f"| {n['node']} | {n['op']} | {n['ms_per_run']:.3g} | {n['share']:.0%} |" for n in b["top_nodes"][:top]]
    return lines + [""]
