"""A sweep on Ray: one export task per recipe, one task per point, results back to the driver.

Placement: a point timed on a GPU asks for num_gpus=1 (one point per GPU); a point timed on a
CPU, and every export, asks for one unit of the custom resource `xopt_timed`, of which a node
offers one: one timed job at a time per node, so points do not pollute each other's latency and
memory. Artifacts travel through Ray's object store (the export packed as one archive) and are
unpacked into each node's cache, so nodes need no shared filesystem. A worker that dies (killed,
out of memory, its node lost) has its task retried up to `retries` times by Ray; an exception
inside a point is that point's recorded error, never a retry.
"""
from __future__ import annotations

import time
from pathlib import Path

from xopt.analysis.sweep_exec import (adopt, export_recipe, failed_record, ident_record, key_of, needs_gpu, not_built,
                                      run_point)
from xopt.errors import UserError


def _export_task(recipe, variants, registered):
    from xopt.runtime.ship import pack

    adopt(registered)
    info = export_recipe(recipe, variants)
    return info, pack(info["dir"])


def local_export(info: dict, fetch) -> str:
    """The export on this node: the exporting node's directory when this node sees it complete
    (the same machine, or a shared filesystem), else the shipped archive (`fetch()`: its bytes)
    unpacked into this node's cache."""
    from xopt.cache import cache_root
    from xopt.runtime.ship import complete, shas, unpack

    here = Path(info["dir"])
    if complete(here) and shas(here) == info["sha256"]:
        return str(here)
    return str(unpack(fetch(), cache_root() / "sweep-shipped"))


def _point_task(point, info, holder, registered):
    adopt(registered)
    try:
        import ray

        artifacts = local_export(info, lambda: ray.get(holder[0]))
    except Exception as exc:  # noqa: BLE001 - the point records why its artifacts did not arrive
        return failed_record(point, key_of(point, info["sha256"]), info["sha256"].get(point.variant),
                             f"artifacts did not arrive: {type(exc).__name__}: {exc}")
    return run_point(point, artifacts, info["sha256"][point.variant])


def check_capacity(ctx, points) -> None:
    """Refuse a sweep the cluster cannot place, instead of tasks that wait forever."""
    from xopt.runtime.ray_env import TIMED_RESOURCE

    if any(needs_gpu(p.backend) for p in points) and ctx.gpus() == 0:
        gpu = sorted({p.backend for p in points if needs_gpu(p.backend)})
        raise UserError(f"{', '.join(gpu)} point(s) need a GPU and {ctx.describe()} has none",
                        "join a cluster with GPU nodes (--address) or use backend ort-cpu")
    if ctx.timed_slots() == 0:
        raise UserError(f"no node of {ctx.describe()} offers the {TIMED_RESOURCE} resource, so CPU points and "
                        "exports could never be placed",
                        f"start each node with: ray start ... --resources='{{\"{TIMED_RESOURCE}\": 1}}'")


def execute(sweep, todo: dict, ctx, retries: int, tracker) -> None:
    """Run `todo` ({recipe key: [points]}) on the cluster in `ctx`; results go to `tracker`."""
    from xopt.analysis.isolate import _registered
    from xopt.runtime.ray_env import TIMED_RESOURCE

    ray = ctx.ray
    registered = _registered()
    check_capacity(ctx, [p for pts in todo.values() for p in pts])
    timed = {"num_cpus": 1, "resources": {TIMED_RESOURCE: 1}, "max_retries": retries, "retry_exceptions": False}
    # a fresh worker per export: torch and the exporter's memory go with it
    export = ray.remote(num_returns=2, max_calls=1, **timed)(_export_task).options(name="xopt_export")
    point_cpu = ray.remote(**timed)(_point_task).options(name="xopt_point")
    point_gpu = ray.remote(num_cpus=1, num_gpus=1, max_retries=retries, retry_exceptions=False)(
        _point_task).options(name="xopt_point")
    pending: dict = {}
    for rk, points in todo.items():
        recipe, variants = sweep.recipes[rk]
        info_ref, blob_ref = export.remote(recipe, variants, registered)
        pending[info_ref] = ("export", rk, points, blob_ref)
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=2.0)
            tracker.tick()
            for ref in ready:
                kind, *rest = pending.pop(ref)
                try:
                    value = ray.get(ref)
                except ray.exceptions.RayError as exc:  # retries used up: the worker or node kept dying
                    value = exc
                if kind == "export":
                    rk, points, blob_ref = rest
                    for p, s in _submit_points(rk, points, blob_ref, value, tracker, point_cpu, point_gpu,
                                               registered):
                        pending[s] = ("point", p, value)
                else:
                    point, info = rest
                    if isinstance(value, Exception):
                        crashed = not isinstance(value, ray.exceptions.RayTaskError)
                        value = failed_record(point, key_of(point, info["sha256"]),
                                              info["sha256"].get(point.variant),
                                              _died(value, retries) if crashed else _task_error(value),
                                              attempts=retries + 1 if crashed else 1)
                    tracker.finished(value)
    except KeyboardInterrupt:
        for ref in pending:  # the points measured so far are in results.json already
            ray.cancel(ref, force=True, recursive=True)
        raise


def _died(exc, retries: int) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"the worker died {retries + 1} time(s) ({type(exc).__name__}: {first[:300]})"


def _submit_points(rk, points, blob_ref, value, tracker, point_cpu, point_gpu, registered):
    if isinstance(value, Exception):  # the export itself failed: every point of the recipe says why
        why = _task_error(value)
        for p in points:
            tracker.finished(ident_record(p, f"export failed: {why}"))
        return []
    info = value
    tracker.exported(rk, info)
    out = []
    for p in points:
        record = not_built(p, info)
        if record is not None:
            tracker.finished(record)
            continue
        key = key_of(p, info["sha256"])
        if tracker.reuse(key):
            continue
        task = point_gpu if needs_gpu(p.backend) else point_cpu
        out.append((p, task.remote(p, info, [blob_ref], registered)))
    return out


def _task_error(exc) -> str:
    """The application error inside a Ray task error (its last line: the exception itself)."""
    cause = getattr(exc, "cause", None)
    if cause is not None:
        return str(cause).strip().splitlines()[-1][:500] if str(cause).strip() else type(cause).__name__
    return str(exc).strip().splitlines()[0][:500]
