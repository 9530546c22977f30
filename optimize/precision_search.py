"""Find the smallest set of layer groups to keep in higher precision so a low-precision
variant meets the model's drift gate, measured in the model's own terms.

1. Localise: the all-low-precision graph's domain drift, then each group alone returned to
   FP32 — the groups are ranked by how much that improves the domain term (matte MAE, worst
   stem SDR, Cα RMSD), with the tensor error (SQNR) at each group's last output beside it.
2. Search: keep the k highest-ranked groups in FP32, bisecting on k for the smallest k that
   passes (more FP32 is assumed never to hurt; the chosen k is the one measured to pass).
Every evaluated build is also timed, so the report can plot drift against speed; the speed the
gate quotes for the chosen build is the median of rounds that alternate it with FP32.

On seeded-random weights the gate is measured but not applied (xopt.gate.applies): the
all-low-precision build is kept as the spec configures it, with its drift, and no search runs.
A gate that no build meets raises GateFailed with what was reached, which the exporter records.
"""
from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np

from xopt import progress
from xopt.errors import GateFailed, UserError
from xopt.gate import Judge, applies, drop
from xopt.noise import floor_feeds, noise_floor
from xopt.stats import mean_terms

Make = Callable[[list[str]], Path]  # nodes kept in FP32 -> a built candidate


def _sqnr(ref: np.ndarray, test: np.ndarray) -> float:
    err = float(np.sum((ref.astype(np.float64) - test) ** 2))
    sig = float(np.sum(ref.astype(np.float64) ** 2))
    return float("inf") if err == 0 else 10 * math.log10(max(sig, 1e-300) / err)


class Evaluator:
    """Domain drift of candidates against the FP32 graph on the gate's feeds, and their speed."""

    def __init__(self, spec, src: Path, feeds: list[dict], ort_options: dict | None = None, speed_runs: int = 3,
                 seed: int = 0, noise_feeds: list[dict] | None = None, speed_rounds: int = 5):
        """`noise_feeds`: the inputs of the model's noise floor (xopt.noise), so the gate's floor is
        the one `xopt profile` and `xopt bench` print; default: the gate's own feeds."""
        from xopt.runtime.backends.ort import OrtSession

        self.spec, self.src, self.feeds, self.ort = spec, src, feeds, dict(ort_options or {})
        self.key, self.speed_runs, self.speed_rounds = spec.gate.key, speed_runs, speed_rounds
        with OrtSession(src, **self.ort) as sess:
            self.refs = [sess.run(f) for f in feeds]
            floor = noise_floor(spec, sess.run, noise_feeds or feeds, seed, None if noise_feeds else self.refs)
            value = floor.get(self.key)
            self.noise = float(value) if value is not None else float("nan")
            self.fp32_ms = self._time(sess)
        self.count = 0
        self.on_measure = None  # called with the count after each build is measured (progress)

    def _value(self, refs, outs, feeds) -> float:
        terms = mean_terms([self.spec.drift(r, o, f) for r, o, f in zip(refs, outs, feeds)])
        value = terms.get(self.key)
        return float(value) if value is not None else float("nan")

    def _time(self, sess) -> float | None:
        if not self.speed_runs:
            return None
        sess.run(self.feeds[0])
        times = []
        for _ in range(self.speed_runs):
            t = time.perf_counter()
            sess.run(self.feeds[0])
            times.append(time.perf_counter() - t)
        return 1e3 * float(np.median(times))

    def measure(self, path: Path) -> dict:
        """{"value", "ms", "speedup"} of one candidate."""
        from xopt.runtime.backends.ort import OrtSession

        self.count += 1
        with OrtSession(path, **self.ort) as sess:
            outs = [sess.run(f) for f in self.feeds]
            ms = self._time(sess)
        out = {"value": self._value(self.refs, outs, self.feeds), "ms": ms,
               "speedup": (self.fp32_ms / ms) if ms and self.fp32_ms else None}
        if self.on_measure:
            self.on_measure(self.count)
        return out

    def interleaved(self, path: Path) -> dict | None:
        """Speed of `path` against the FP32 graph in rounds that run one then the other (the
        order alternating), on the first gate input: the median per-round speed-up and its
        range, so a busy neighbour slows both alike. None with no rounds asked."""
        from xopt.runtime.backends.ort import OrtSession

        if not self.speed_rounds:
            return None
        feed = self.feeds[0]
        ref_ms, cand_ms = [], []
        with OrtSession(self.src, **self.ort) as ref, OrtSession(path, **self.ort) as cand:
            ref.run(feed)
            cand.run(feed)
            for r in range(self.speed_rounds):
                pair = (ref, cand) if r % 2 == 0 else (cand, ref)
                times = {}
                for sess in pair:
                    t = time.perf_counter()
                    sess.run(feed)
                    times[id(sess)] = 1e3 * (time.perf_counter() - t)
                ref_ms.append(times[id(ref)])
                cand_ms.append(times[id(cand)])
        ratios = np.asarray(ref_ms) / np.asarray(cand_ms)
        return {"speedup": float(np.median(ratios)), "range": [float(ratios.min()), float(ratios.max())],
                "fp32_ms": float(np.median(ref_ms)), "ms": float(np.median(cand_ms)), "rounds": self.speed_rounds,
                "method": "median of rounds alternating FP32 and this build, first gate input"}


def intermediate_sqnr(src: Path, variant: Path, tensors: list[str], feeds: list[dict], ort: dict) -> dict:
    """SQNR (dB) of intermediate tensors of `variant` against the FP32 graph, both run with those
    tensors exposed as outputs (what onnxruntime.quantization.qdq_loss_debug matches)."""
    import tempfile

    import onnx

    from xopt.optimize.calibration import value_infos
    from xopt.runtime.backends.ort import OrtSession

    found: dict[str, list] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for tag, path in (("ref", src), ("test", variant)):
            model = onnx.load(str(path))
            infos = value_infos(model)
            names = {o.name for o in model.graph.output}
            have = [t for t in tensors if t in infos]
            model.graph.output.extend([infos[t] for t in have if t not in names])
            aug = Path(tmp) / f"{tag}.onnx"
            onnx.save(model, str(aug))
            del model
            with OrtSession(aug, **ort) as sess:
                sess.output_names = have
                out = sess.run(feeds[0])
            for t in have:
                found.setdefault(t, []).append(np.asarray(out[t], np.float32))
    return {t: round(_sqnr(*v), 2) for t, v in found.items() if len(v) == 2}


def last_outputs(model, groups: dict[str, list[str]]) -> dict[str, str]:
    """Each group's last node's first output (graph order): where its error leaves the group."""
    by_name = {n.name: n for n in model.graph.node}
    return {g: by_name[nodes[-1]].output[0] for g, nodes in groups.items() if nodes and nodes[-1] in by_name}


class Search:
    def __init__(self, make: Make, groups: dict[str, list[str]], evaluator: Evaluator, judge: Judge,
                 max_fp32_groups: int | None = None, label: str = "INT8", localise_always: bool = True):
        self.make, self.groups, self.ev, self.judge, self.label = make, groups, evaluator, judge, label
        self.localise_always = localise_always
        self.cap = len(groups) - 1 if max_fp32_groups is None else min(max_fp32_groups, len(groups) - 1)
        self.trail: list[dict] = []
        self.layers: list[dict] = []

    def planned_builds(self) -> int:
        """Builds the search will measure, at most (for progress): the all-low-precision build,
        each group alone in FP32, the bisection, and the curve points."""
        if not self.judge.applied:
            return 1
        n = len(self.groups)
        return 1 + n + max(1, math.ceil(math.log2(max(2, self.cap + 1)))) + 4

    def _try(self, fp32_groups: list[str], record: bool = True) -> tuple[dict, Path]:
        path = self.make([n for g in fp32_groups for n in self.groups[g]])
        m = self.ev.measure(path)
        if record:
            self.trail.append({"fp32_groups": len(fp32_groups), "drift": m["value"], "speedup": m["speedup"],
                               "ms": m["ms"], "passed": self.judge.ok(m["value"]),
                               "label": "all " + self.label if not fp32_groups else f"{len(fp32_groups)} FP32"})
        return m, path

    def localise(self, src_model, all_low: dict, sqnr: dict) -> list[tuple[float, str]]:
        gate = self.judge.gate
        ranked = []
        outputs = last_outputs(src_model, self.groups)
        for g, nodes in self.groups.items():
            m, path = self._try([g], record=False)
            path.unlink(missing_ok=True)
            gain = drop(gate, all_low["value"]) - drop(gate, m["value"])
            ranked.append((gain, g))
            self.layers.append({"group": g, "nodes": nodes, "drift": all_low["value"],
                                "drift_if_fp32": m["value"], "improvement": gain,
                                "speedup_if_fp32": m["speedup"], "output": outputs.get(g),
                                "sqnr_db": sqnr.get(outputs.get(g, ""))})
        ranked.sort(key=lambda x: (-x[0] if math.isfinite(x[0]) else -1e300, x[1]))
        order = {g: i for i, (_, g) in enumerate(ranked)}
        self.layers.sort(key=lambda r: order[r["group"]])
        return ranked

    def run(self, src_model, src_path: Path) -> tuple[Path, list[str], dict]:
        all_low, path = self._try([])
        if not self.judge.applied:  # seeded-random: the spec's build as it is, its drift measured
            return path, [], self._facts(all_low, all_low, [], [], self.ev.interleaved(path))
        tensors = list(last_outputs(src_model, self.groups).values())
        sqnr = intermediate_sqnr(src_path, path, tensors, self.ev.feeds, self.ev.ort) if tensors else {}
        if self.judge.ok(all_low["value"]):
            ranked = []
            if self.localise_always:  # nothing to fall back; still say where the error enters
                ranked = self.localise(src_model, all_low, sqnr)
                self._curve(ranked)
            return path, [], self._facts(all_low, all_low, [], ranked, self.ev.interleaved(path))
        path.unlink(missing_ok=True)
        if self.cap < 1:  # no group may fall back: nothing to rank for
            raise self._failed((all_low, 0, None), all_low, [])
        ranked = self.localise(src_model, all_low, sqnr)
        lo, hi, found = 1, self.cap, None
        best, built = (all_low, 0, None), []
        while lo <= hi:
            k = (lo + hi) // 2
            kept = [g for _, g in ranked[:k]]
            m, p = self._try(kept)
            built.append(p)
            if self.judge.better(m["value"], best[0]["value"]):
                best = (m, k, p)
            if self.judge.ok(m["value"]):
                found, hi = (m, p, kept), k - 1
            else:
                lo = k + 1
        keep = found[1] if found else best[2]
        for q in built:
            if q != keep:
                q.unlink(missing_ok=True)
        if found is None:
            raise self._failed(best, all_low, ranked)
        m, path, kept = found
        return path, kept, self._facts(m, all_low, kept, ranked, self.ev.interleaved(path))

    def _failed(self, best, all_low: dict, ranked) -> GateFailed:
        """What the search reached when no build meets the gate, as an error that carries it."""
        m, k, path = best
        speed = self.ev.interleaved(path) if path is not None else None
        if path is not None:
            path.unlink(missing_ok=True)
        gate = self.judge.gate
        quoted = speed or ({"speedup": m["speedup"]} if m.get("speedup") else None)
        at = f" at {_speed_text(quoted)}" if quoted else ""
        worst = [g for _, g in ranked[:3]]
        facts = {"gate": {**self.judge.as_dict(), "passed": False, "value": m["value"],
                          "speed": speed, "fp32_groups_at_best": k},
                 "best": {"value": m["value"], "fp32_groups": k, "speed": speed, "speedup": m.get("speedup")},
                 "all_low_precision": {"value": all_low["value"], "speedup": all_low["speedup"]},
                 "groups": len(self.groups), "worst_groups": worst, "gate_evaluations": self.ev.count,
                 "layer_drift": self.layers, "drift_vs_speed": sorted(self.trail, key=lambda r: r["fp32_groups"])}
        return GateFailed(
            f"no mix of precisions meets the gate {self.judge.describe()}: the best reached was "
            f"{gate.key} {m['value']:.4g}{gate.unit} with {k} of {len(self.groups)} groups in FP32{at} "
            f"(all {self.label}: {all_low['value']:.4g}{gate.unit}; worst groups: {', '.join(worst)})",
            "loosen the gate (--max-drop in the drift term's units), or use the FP32 variant", facts)

    def _curve(self, ranked, points: int = 4) -> None:
        """What falling back would cost when nothing has to: the 1, 2, 4, ... best-ranked groups
        in FP32 (at most `points` builds), for the drift-vs-speed curve."""
        k = 1
        while k <= self.cap and points > 0:
            _, p = self._try([g for _, g in ranked[:k]])
            p.unlink(missing_ok=True)
            k, points = k * 2, points - 1

    def _facts(self, chosen: dict, all_low: dict, kept: list[str], ranked, speed: dict | None) -> dict:
        why = {g: f"alone in FP32 improves {self.judge.gate.key} by {gain:.4g}{self.judge.gate.unit}"
               for gain, g in ranked if g in kept}
        curve = sorted(self.trail, key=lambda r: r["fp32_groups"])
        if not self.judge.gate.higher_is_better:  # FP32 against itself: 0 (a dB term would be infinite)
            curve.append({"fp32_groups": len(self.groups), "drift": 0.0, "speedup": 1.0, "label": "FP32",
                          "passed": True})
        g, value = self.judge.gate, chosen["value"]
        if self.judge.applied:
            text = (f"{g.key} {value:.4g}{g.unit} meets {self.judge.describe()} with {len(kept)} of "
                    f"{len(self.groups)} groups in FP32")
        else:
            verdict = "within" if self.judge.would_pass(value) else "outside"
            text = (f"not applied: {g.key} {value:.4g}{g.unit} measured ({verdict} {self.judge.describe()}); "
                    f"{self.judge.why_not}")
        return {"gate": {**self.judge.as_dict(), "passed": True if self.judge.applied else None,
                         "would_pass": self.judge.would_pass(value), "value": value,
                         "speedup": speed["speedup"] if speed else chosen["speedup"], "speed": speed, "text": text},
                "fp32_groups": [{"group": g_, "nodes": self.groups[g_], "why": why.get(g_, "")} for g_ in kept],
                "all_low_precision": {"value": all_low["value"], "speedup": all_low["speedup"]},
                "groups": len(self.groups), "gate_evaluations": self.ev.count,
                "layer_drift": self.layers if self.judge.applied else None, "drift_vs_speed": curve}


def _speed_text(speed: dict) -> str:
    """"1.42x FP32 (1.35-1.49 over 5 alternating rounds)", or the one-run figure when that is all there is."""
    if speed.get("range"):
        lo, hi = speed["range"]
        return f"{speed['speedup']:.2f}x FP32's speed ({lo:.2f}-{hi:.2f} over {speed['rounds']} alternating rounds)"
    return f"{speed['speedup']:.2f}x FP32's speed (one timed run)"


def speed_text(speed: dict | None) -> str:
    return _speed_text(speed) if speed else ""


GATE_OPTIONS = (
    # (name, type, default, description, choices)
    ("max_drop", "float", None, "largest drop in the gate's drift term, in its own units (MAE, dB of SDR, "
     "Å of Cα RMSD, IoU or lDDT points); default: within noise_multiple x the noise floor (or the spec's limit)", None),
    ("noise_multiple", "float", None, "k in 'drift within k x the noise floor' (default: the spec's gate, 3)", None),
    ("gate_inputs", "str", "profile", "inputs the gate measures on: the device profile's (the profile's own "
     "inputs, so export and profile agree) or the calibration shape", ("profile", "calibration")),
    ("gate_samples", "int", 2, "inputs the gate measures on", None),
    ("group_depth", "int", 3, "module-path depth of the groups the spec does not name", None),
    ("max_fp32_groups", "int", -1, "most groups the search may keep in FP32 (-1: all but one)", None),
    ("localise", "str", "always", "rank every group even when the all-low-precision build already passes "
     "(always) or only when it fails (on-failure)", ("always", "on-failure")),
    ("speed_runs", "int", 3, "timed runs per candidate for the drift-vs-speed curve (0: not timed)", None),
    ("speed_rounds", "int", 5, "rounds alternating FP32 and the chosen build for the speed the gate quotes "
     "(median and range; 0: not timed)", None),
)


def gate_options():
    from xopt.optimize.base import Option

    return [Option(n, t, d, h, c) for n, t, d, h, c in GATE_OPTIONS]


def gate_feeds(spec, opts, ctx, seed: int = 0) -> tuple[list[dict], str, list[dict] | None]:
    """(the feeds the gate measures drift on, where they come from, the noise floor's feeds)."""
    n = opts["gate_samples"]
    if opts["gate_inputs"] == "profile" and ctx.profile is not None:
        targets = {**ctx.profile.model_targets(spec.name), **({"config": ctx.config} if ctx.config else {}),
                   **({"weights": ctx.weights} if ctx.weights else {})}  # as the profiler's run_targets
        return (list(spec.profile_inputs(targets, n, seed)), f"device profile {ctx.profile.name} inputs, seed {seed}",
                floor_feeds(spec, targets, seed))
    if ctx.calibration is None:
        raise UserError(f"model {spec.name} provides no inputs to measure a drift gate on",
                        "pass a device profile with --profile")
    feeds = list(ctx.calibration(n + 8))[-n:]  # held out: the calibration uses the first ones
    return feeds, "held-out calibration inputs", None


def setup(spec, src: Path, opts, ctx, ort_options: dict | None = None) -> tuple[Evaluator, Judge, dict]:
    if spec.gate is None:
        raise UserError(f"model {spec.name} declares no drift gate", "use a variant without a gated pass")
    feeds, where, noise_feeds = gate_feeds(spec, opts, ctx)
    with progress.step(f"{spec.name}: FP32 outputs and noise floor on the gate's inputs ({where})"):
        ev = Evaluator(spec, src, feeds, ort_options, opts["speed_runs"], noise_feeds=noise_feeds,
                       speed_rounds=opts["speed_rounds"])
    applied, why = applies(ctx.weights, opts["max_drop"])
    judge = Judge(spec.gate, ev.noise, opts["noise_multiple"], opts["max_drop"], applied, why)
    shapes = {k: list(v.shape) for k, v in feeds[0].items()}
    return ev, judge, {"gate_inputs": where, "gate_input_shapes": shapes, "gate_samples": len(feeds),
                       "fp32_ms": ev.fp32_ms}


@contextlib.contextmanager
def counted(label: str, ev: Evaluator, total: int):
    """Progress of a gated pass: builds measured out of the planned count (the bisection may
    stop early), elapsed, time left."""
    with progress.counted(label, total, "builds measured") as c:
        def tick(done: int) -> None:
            c.set(done, max(total, done))

        ev.on_measure = tick
        try:
            yield
        finally:
            ev.on_measure = None


def spec_groups(spec, model, op_types, depth: int, never=frozenset(), named_only: bool = False) -> dict[str, list[str]]:
    from xopt.optimize.precision_groups import groups

    return groups(model, set(op_types), spec.precision_group, depth, set(never), named_only)
