"""Interop with NVIDIA Polygraphy: xopt's inputs and outputs in Polygraphy's JSON formats,
and artifact-vs-artifact comparison through Polygraphy's Comparator.

A user checks xopt's numbers independently with
``polygraphy run model.onnx --onnxrt --load-inputs inputs.json --load-outputs outputs.json``
(inputs: a JSON list of feed dicts; outputs: a RunResults). Comparisons use
`SimpleCompareFunc` (the non-deprecated form of `CompareFunc.simple`, which 0.60 removes).
ONNX artifacts run in Polygraphy's own ONNX Runtime runner on CPU; any other artifact
(engines included) runs through an xopt backend wrapped as a Polygraphy runner, so the
TensorRT safety checks of the `trt` backend apply.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from xopt.errors import UserError
from xopt.extras import require

DEFAULT_RUNNER = "xopt"


def _polygraphy():
    return require("polygraphy", "polygraphy", "needed for Polygraphy JSON files and comparisons")


def _quiet():
    from polygraphy.logger import G_LOGGER

    return G_LOGGER.verbosity(G_LOGGER.ERROR)


def save_inputs(feeds: Sequence[Mapping[str, np.ndarray]], path, force: bool = False) -> Path:
    """Feeds as Polygraphy's input file (`--load-inputs`): a JSON list of {name: array}."""
    _polygraphy()
    from polygraphy.json import to_json

    from xopt.atomic import write_text

    return write_text(path, to_json([{k: np.asarray(v) for k, v in f.items()} for f in feeds]), force=force)


def load_inputs(path) -> list[dict[str, np.ndarray]]:
    _polygraphy()
    from polygraphy.json import load_json

    data = _load(load_json, path, "inputs")
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise UserError(f"{path} is not a Polygraphy inputs file (a list of feed dicts)",
                        "write it with xopt's save_inputs or polygraphy run --save-inputs")
    return [{k: np.asarray(v) for k, v in d.items()} for d in data]


def run_results(runs: Mapping[str, Sequence[Mapping[str, np.ndarray]]]):
    """{runner name: [outputs of iteration 0, 1, ...]} -> Polygraphy RunResults."""
    _polygraphy()
    from polygraphy.comparator import IterationResult, RunResults

    results = RunResults()
    for name, iterations in runs.items():
        results.add([IterationResult(outputs={k: np.asarray(v) for k, v in it.items()}, runner_name=name)
                     for it in iterations], runner_name=name)
    return results


def save_outputs(outputs, path, runner_name: str = DEFAULT_RUNNER, force: bool = False) -> Path:
    """Outputs as Polygraphy's output file (`--load-outputs`): a RunResults.

    `outputs` is a list of per-iteration output dicts (one runner), or a RunResults.
    """
    _polygraphy()
    from polygraphy.comparator import RunResults
    from polygraphy.json import to_json

    from xopt.atomic import write_text

    if not isinstance(outputs, RunResults):
        outputs = run_results({runner_name: outputs})
    return write_text(path, to_json(outputs), force=force)


def load_outputs(path):
    _polygraphy()
    from polygraphy.comparator import RunResults

    results = _load(RunResults.load, path, "outputs")
    if not isinstance(results, RunResults):
        raise UserError(f"{path} is not a Polygraphy RunResults file", "write it with polygraphy run --save-outputs")
    return results


def _load(loader, path, what):
    if not Path(path).is_file():
        raise UserError(f"Polygraphy {what} file {path} does not exist", "pass an existing JSON file")
    try:
        return loader(str(path))
    except Exception as exc:  # Polygraphy raises PolygraphyException / JSON errors of its own
        raise UserError(f"cannot read Polygraphy {what} from {path} ({exc})", "pass a file Polygraphy wrote") from exc


def make_runner(artifact, backend: str | None = None, name: str | None = None, example: Mapping | None = None):
    """A Polygraphy runner for an artifact: ONNX -> Polygraphy's ONNX Runtime (CPU) runner unless a
    backend is named; anything else -> the xopt backend (default by artifact: .engine -> trt), whose
    input metadata (dtype, rank; every axis dynamic) is taken from `example`, a feed."""
    _polygraphy()
    path = Path(artifact)
    if not path.exists():
        raise UserError(f"artifact {path} does not exist", "pass an exported .onnx or .engine file")
    name = name or f"{path.name}" + (f"[{backend}]" if backend else "")
    if backend is None and path.suffix == ".onnx":
        from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

        return OnnxrtRunner(SessionFromOnnx(str(path), providers=["CPUExecutionProvider"]), name=name)
    if example is None:
        raise UserError(f"running {path.name} through an xopt backend in Polygraphy needs an example feed",
                        "pass example= (one of the feeds)")
    return _session_runner_class()(path, backend or ("trt" if path.suffix == ".engine" else "ort-cpu"), name, example)


def _session_runner_class():
    from polygraphy.backend.base import BaseRunner
    from polygraphy.common import TensorMetadata
    from polygraphy.datatype import DataType

    class XoptSessionRunner(BaseRunner):
        """An xopt backend session as a Polygraphy runner."""

        def __init__(self, path, backend, name, example):
            super().__init__(name=name, prefix="xopt-runner")
            self.path, self.backend = path, backend
            self.example = {k: (np.asarray(v).dtype, np.ndim(v)) for k, v in example.items()}
            self.session = None

        def activate_impl(self):
            from xopt.runtime.backends.base import get_backend

            self.session = get_backend(self.backend).session(self.path)

        def get_input_metadata_impl(self):
            meta = TensorMetadata()
            for n in self.session.input_names:
                dtype, rank = self.example.get(n, (np.dtype(np.float32), 0))
                meta.add(n, dtype=DataType.from_dtype(dtype), shape=[-1] * rank)
            return meta

        def infer_impl(self, feed_dict):
            t0 = time.perf_counter()
            out = self.session.run(feed_dict)
            self.inference_time = time.perf_counter() - t0
            return out

        def deactivate_impl(self):
            self.session.close()
            self.session = None

    return XoptSessionRunner


def run(runners, feeds: Sequence[Mapping[str, np.ndarray]]):
    """Run every runner on the same feeds through Polygraphy's Comparator -> RunResults."""
    _polygraphy()
    from polygraphy.comparator import Comparator

    with _quiet():
        return Comparator.run(runners, data_loader=[dict(f) for f in feeds], use_subprocess=False)


def compare(results, atol: float = 1e-5, rtol: float = 1e-5, error_stat: str = "max") -> dict:
    """Compare the runners in a RunResults pairwise with SimpleCompareFunc; a JSON-able summary."""
    _polygraphy()
    from polygraphy.comparator import Comparator, SimpleCompareFunc

    func = SimpleCompareFunc(atol=atol, rtol=rtol, check_error_stat=error_stat)
    with _quiet():
        accuracy = Comparator.compare_accuracy(results, compare_func=func)
    pairs = []
    for acc in accuracy:
        for (a, b), iterations in acc.items():
            outputs: dict[str, dict] = {}
            for it in iterations:
                for out_name, res in it.items():
                    cur = outputs.setdefault(out_name, {"passed": True, "max_abs": 0.0, "max_rel": 0.0, "mean_abs": 0.0})
                    cur["passed"] = cur["passed"] and bool(res)
                    cur["max_abs"] = max(cur["max_abs"], _f(getattr(res, "max_absdiff", None)))
                    cur["max_rel"] = max(cur["max_rel"], _f(getattr(res, "max_reldiff", None)))
                    cur["mean_abs"] = max(cur["mean_abs"], _f(getattr(res, "mean_absdiff", None)))
            pairs.append({"a": a, "b": b, "iterations": len(iterations), "outputs": outputs,
                          "passed": bool(iterations) and all(o["passed"] for o in outputs.values())})
    return {"passed": bool(accuracy) and all(p["passed"] for p in pairs), "atol": atol, "rtol": rtol,
            "error_stat": error_stat, "pairs": pairs}


def _f(v) -> float:
    return float("nan") if v is None else float(v)


def compare_artifacts(a, b, feeds: Sequence[Mapping[str, np.ndarray]], atol: float = 1e-5, rtol: float = 1e-5,
                      backend_a: str | None = None, backend_b: str | None = None, error_stat: str = "max",
                      save_dir=None, force: bool = False) -> dict:
    """Run two artifacts on the same feeds and compare them; optionally save inputs.json and
    <runner>.outputs.json files `polygraphy run --load-inputs/--load-outputs` accepts."""
    if not feeds:
        raise UserError("no feeds to compare the artifacts on", "pass at least one input feed")
    ra, rb = make_runner(a, backend_a, example=feeds[0]), make_runner(b, backend_b, example=feeds[0])
    if ra.name == rb.name:
        rb.name = f"{rb.name}#2"
    results = run([ra, rb], feeds)
    summary = compare(results, atol=atol, rtol=rtol, error_stat=error_stat)
    if save_dir is not None:
        save_dir = Path(save_dir)
        summary["files"] = {"inputs": str(save_inputs(feeds, save_dir / "inputs.json", force=force))}
        for i, (runner_name, iterations) in enumerate(results.items()):
            summary["files"][runner_name] = str(save_outputs(run_results({runner_name: iterations}),
                                                             save_dir / f"outputs_{'ab'[i]}.json", force=force))
    return summary
