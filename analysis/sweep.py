"""`xopt sweep`: many (model, variant, backend, profile, shape) points, on Ray when it is
installed (an embedded instance on loopback, or a cluster joined with --address), else one after
another in this process. Results survive faults (sweep_store); one comparison report at the end."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from xopt import progress
from xopt.analysis import sweep_file
from xopt.analysis.sweep_exec import (export_recipe, failed_record, ident_key, ident_record, key_of, not_built,
                                      run_point)
from xopt.analysis.sweep_store import Store
from xopt.errors import UserError

INSTALL_HINT = 'pip install "xopt[ray]" to run points in parallel, on this machine or a cluster'


@dataclass
class Tracker:
    """The driver's side of a running sweep: every result lands in the store the moment it
    arrives; counts and progress for the terminal."""
    store: Store
    total: int
    update: object = None
    measured: int = 0
    reused: int = 0
    failed: int = 0
    t0: float = field(default_factory=time.perf_counter)

    def reuse(self, key: str | None) -> bool:
        if key and self.store.done(key):
            self.reused += 1
            self.tick()
            return True
        return False

    def exported(self, recipe_key: str, info: dict) -> None:
        self.store.put_recipe(recipe_key, {"sha256": info["sha256"], "weights": info.get("weights"),
                                           "node": info.get("node"), "export_s": info.get("wall_s")})

    def finished(self, record: dict) -> None:
        self.store.put(record)
        if record["status"] == "failed":
            self.failed += 1
            progress.info(f"✗ {record['model']} {record['variant']} on {record['backend']} [{record['shape_text']}]: "
                          f"{record['error'][:300]}")
        else:
            self.measured += 1
            lat = (record.get("result") or {}).get("latency_ms") or {}
            p50 = f"p50 {lat['p50']:.3g} ms" if lat.get("p50") else record.get("error") or ""
            where = (record.get("node") or {}).get("ip") or (record.get("node") or {}).get("hostname", "")
            progress.info(f"✓ {record['model']} {record['variant']} on {record['backend']} [{record['shape_text']}]: "
                          f"{p50} ({record.get('wall_s', 0):.1f} s on {where})")
        self.tick()

    @property
    def done(self) -> int:
        return self.measured + self.reused + self.failed

    def tick(self) -> None:
        if self.update:
            self.update({"what": "points", "done": self.done, "total": self.total})


def plan(sweep, store: Store) -> tuple[dict, int]:
    """{recipe key: points still to measure} and how many points are known done without
    exporting anything (their recipe's sha256 is recorded and their key is in the store)."""
    todo: dict = {}
    reused = 0
    for p in sweep.points:
        key = key_of(p, store.recipe_shas(p.recipe.key))
        if key and store.done(key):
            reused += 1
        else:
            todo.setdefault(p.recipe.key, []).append(p)
    return todo, reused


def execute_sequential(sweep, todo: dict, tracker: Tracker) -> None:
    for rk, points in todo.items():
        recipe, variants = sweep.recipes[rk]
        try:
            with progress.step(f"export {recipe.label()}: {', '.join(variants)}"):
                info = export_recipe(recipe, variants)
        except Exception as exc:  # noqa: BLE001 - each of its points records why
            for p in points:
                tracker.finished(ident_record(p, f"export failed: {exc}"))
            continue
        tracker.exported(rk, info)
        for p in points:
            record = not_built(p, info)
            if record is not None:
                tracker.finished(record)
                continue
            key = key_of(p, info["sha256"])
            if tracker.reuse(key):
                continue
            tracker.finished(run_point(p, info["dir"], info["sha256"][p.variant]))


def records_for(sweep, store: Store) -> list[dict]:
    """One record per point of this sweep (its latest), in sweep order; older points in the
    results file (other sweeps, superseded artifacts) stay there but are not this report's."""
    out = []
    for p in sweep.points:
        key = key_of(p, store.recipe_shas(p.recipe.key))
        rec = (key and store.get(key)) or store.get(ident_key(p))
        rec = rec or failed_record(p, key, None, "not measured (the sweep was interrupted before it)")
        out.append({**rec, "shape_text": p.shape_text()})  # as this sweep file writes it
    return out


def default_out(path) -> Path:
    return Path("sweeps") / Path(path).stem


def run_sweep(path, out: str | Path | None = None, address: str | None = None, sequential: bool = False,
              retries: int = 2, force: bool = False, command: str | None = None) -> dict:
    """Run (or resume) the sweep in `path`; returns {"report", "paths", "counts"}."""
    from xopt.analysis import sweep_report
    from xopt.analysis.report import refuse_existing, write_reports
    from xopt.atomic import dir_lock
    from xopt.runtime import ray_env

    sweep = sweep_file.load(path)  # every name and value checked before any output
    if retries < 0:
        raise UserError(f"--retries {retries} is negative", "pass --retries 0 or more")
    address = ray_env.requested_address(address)
    use_ray = not sequential and (address is not None or ray_env.available())
    if address is not None and sequential:
        raise UserError("--sequential runs in this process and --address joins a cluster", "pass one of them")
    if address is not None:
        ray_env.require_ray("to join a Ray cluster")
    out = Path(out) if out else default_out(path)
    refuse_existing(out, force)
    command = command or f"xopt sweep {path} --out {out}"
    with dir_lock(out):
        store = Store(out, force)
        todo, known = plan(sweep, store)
        tracker = Tracker(store, len(sweep.points), reused=known)
        if known:
            progress.info(f"{known} of {len(sweep.points)} point(s) already measured in {store.path}: reused")
        where = "nothing left to measure" if not todo else "this process, one point after another"
        store.start_run({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command,
                         "points": len(sweep.points)})
        interrupted, notice = False, None
        try:
            if todo and use_ray:
                with ray_env.connect(address, why="to scale out") as ctx:
                    where = ctx.describe()
                    progress.info(f"sweep: {sum(map(len, todo.values()))} point(s) to check on {where}")
                    with progress.bar(f"sweep {sweep.path.name} on {'embedded Ray' if ctx.embedded else 'Ray'}") as bar:
                        tracker.update = bar
                        tracker.tick()
                        from xopt.analysis.sweep_ray import execute

                        execute(sweep, todo, ctx, retries, tracker)
            elif todo:
                if not sequential:
                    notice = f"ray is not installed: the points ran one after another in this process; {INSTALL_HINT}"
                    progress.info(notice)
                with progress.bar(f"sweep {sweep.path.name} in this process") as bar:
                    tracker.update = bar
                    execute_sequential(sweep, todo, tracker)
        except KeyboardInterrupt as exc:
            interrupted = True
            # for the command to print (after its output redirections end), even under --quiet
            exc.note = (f"{tracker.measured + tracker.failed} point(s) of this run are saved in {store.path}; "
                        "run the same command again to resume")
            raise
        finally:
            store.end_run(finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), measured=tracker.measured,
                          reused=tracker.reused, failed=tracker.failed, interrupted=interrupted, where=where)
        records = records_for(sweep, store)
        counts = {"measured": tracker.measured, "reused": tracker.reused,
                  "failed": sum(r["status"] == "failed" for r in records)}
        report = sweep_report.build(sweep, records, counts, where, command)
        paths = write_reports(report, out, force=True)
    return {"report": report, "paths": paths, "counts": counts, "results": store.path, "notice": notice}
