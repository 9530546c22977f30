"""The engine build, run in a child process (`python -m xopt.optimize._trt_build REQUEST.json`).

TensorRT can abort or segfault where Python expects an exception (no driver, broken
libraries, out of host memory); in a child that becomes a clean UserError in the
parent with the last lines TensorRT logged. The child prints one JSON line: the facts
of the build, or the user-facing problem.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from xopt.errors import UserError

_TAIL_LINES = 12


def _dtype_name(dtype) -> str:
    return str(dtype).rsplit(".", 1)[-1].lower()


def build(request: dict, plan: dict) -> dict:
    """Runs inside the child: import the flavour, configure, build, write engine and timing cache."""
    from xopt.optimize._trt_config import BuildPlan, BuildRequest, configure
    from xopt.runtime.trt_env import flavour

    req, p = BuildRequest(**request), BuildPlan(**plan)
    trt = __import__(flavour(req.flavour).module)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, config, _parser, cache = configure(trt, builder, logger, req, p)
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    build_ms = (time.perf_counter() - t0) * 1e3
    if serialized is None:
        raise UserError(f"TensorRT could not build an engine from {Path(req.onnx).name} (see its log above)",
                        "check the shapes, the workspace size and the operators it named")
    data = bytes(serialized)  # IHostMemory exposes the buffer protocol
    Path(req.engine).write_bytes(data)
    timing_cache_bytes = None
    if cache is not None:
        from xopt.atomic import write_bytes

        blob = bytes(cache.serialize())
        write_bytes(req.timing_cache, blob, force=True)
        timing_cache_bytes = len(blob)
    return {
        "ok": True,
        "build_ms": round(build_ms, 1),
        "trt_version": getattr(trt, "__version__", "unknown"),
        "size_bytes": len(data),
        "timing_cache_bytes": timing_cache_bytes,
        "inputs": [{"name": t.name, "dtype": _dtype_name(t.dtype)} for t in map(network.get_input, range(network.num_inputs))],
        "outputs": [{"name": t.name, "dtype": _dtype_name(t.dtype)}
                    for t in map(network.get_output, range(network.num_outputs))],
    }


def main(argv: list[str]) -> int:
    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    try:
        answer = build(job["request"], job["plan"])
    except UserError as exc:
        answer = {"ok": False, "problem": exc.problem, "fix": exc.fix}
    sys.stdout.flush()
    print("\n" + json.dumps(answer), flush=True)
    return 0


def run(request: dict, plan: dict, timeout_s: float = 1800.0, workdir: str | Path | None = None) -> dict:
    """Build in a child process; the child's UserError is re-raised here, a crash becomes one."""
    with tempfile.TemporaryDirectory(dir=workdir, prefix="xopt-trt-") as tmp:
        job = Path(tmp) / "job.json"
        job.write_text(json.dumps({"request": request, "plan": plan}), encoding="utf-8")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        try:
            proc = subprocess.run(_command(job), capture_output=True, text=True, timeout=timeout_s, env=env)
        except subprocess.TimeoutExpired as exc:
            raise UserError(f"the engine build did not finish in {timeout_s:.0f} s",
                            "raise build_timeout_s or narrow the max shapes") from exc
    answer = _last_json(proc.stdout)
    if proc.returncode == 0 and answer is not None:
        if answer.get("ok"):
            return answer
        raise UserError(answer["problem"], answer.get("fix"))
    raise UserError(f"the engine build process {_how(proc.returncode)}: {_tail(proc.stderr + proc.stdout)}",
                    "this is a TensorRT failure; try a smaller max shape or workspace, or report it with the log")


def _command(job: Path) -> list[str]:
    return [sys.executable, "-m", "xopt.optimize._trt_build", str(job)]


def _last_json(stdout: str) -> dict | None:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


def _how(rc: int) -> str:
    if rc < 0:
        try:
            return f"was killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"was killed by signal {-rc}"
    return f"exited with status {rc}"


def _tail(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip() and not ln.startswith("{")]
    return " | ".join(lines[-_TAIL_LINES:])[-2000:]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
