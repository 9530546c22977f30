"""`xopt sweep`: profile a matrix of points from a TOML file, on Ray when installed."""
from __future__ import annotations

from xopt.cli.common import command_line, console, table

NAME = "sweep"
ORDER = 6
HELP = "profile many (model, variant, backend, profile, shape) points from SWEEP.toml, resumably, on Ray"


def add_arguments(p, argv: list[str]) -> None:
    p.add_argument("sweep", metavar="SWEEP.toml", help="the jobs (see docs/commands/sweep.md)")
    p.add_argument("--out", default=None, help="results and report directory (default sweeps/<file name>)")
    p.add_argument("--address", default=None,
                   help="join this Ray cluster (HOST:PORT; default $RAY_ADDRESS, else an embedded Ray on 127.0.0.1)")
    p.add_argument("--sequential", action="store_true", help="no Ray: one point after another in this process")
    p.add_argument("--retries", type=int, default=2, help="times Ray retries a point whose worker died (default 2)")
    p.add_argument("--force", action="store_true", help="replace results/report files xopt did not write")


def run(args) -> int:
    from pathlib import Path

    from xopt.analysis.quiet import announce, run_log
    from xopt.analysis.sweep import default_out, run_sweep

    from xopt.analysis import sweep_file
    from xopt.analysis.report import refuse_existing
    from xopt.atomic import check_writable

    where = Path(args.out) if args.out else default_out(args.sweep)
    sweep_file.load(args.sweep)  # a bad file or an existing foreign report: refused before the log opens
    refuse_existing(where, args.force)
    check_writable(where)  # before any point is measured
    try:  # Ray's and the libraries' own output go to a log beside the results
        with run_log(where, "sweep", command_line()) as log:
            out = run_sweep(args.sweep, where, address=args.address, sequential=args.sequential,
                            retries=args.retries, force=args.force, command=command_line())
    except KeyboardInterrupt as exc:
        if getattr(exc, "note", None):
            import sys

            print(f"xopt: interrupted: {exc.note}", file=sys.stderr)
        raise
    if out["notice"]:
        import sys

        print(f"xopt: {out['notice']}", file=sys.stderr)
    report, counts = out["report"], out["counts"]
    fast = report["extra"]["Fastest variant within its drift gate"]
    con = console()
    if con.width >= 140:
        con.print(table("fastest variant within its drift gate", fast["head"], fast["rows"]))
    else:  # one line per (model, shape, device): a 9-column table folds into unreadable cells
        for f in report["fastest"]:
            best = (f"{f['variant']} ({f['backend']}) p50 {f['p50_ms']:.3g} ms" if f["variant"]
                    else "no variant meets its drift gate")
            vs = f", {f['speedup_vs_fp32']:.2f}x FP32" if f["speedup_vs_fp32"] else ""
            missed = f"; missed the gate: {', '.join(f['missed_gate'])}" if f["missed_gate"] else ""
            con.print(f"{f['model']} [{f['shape']}] on {f['device']} vs {f['profile']}: {best}{vs}{missed}",
                      markup=False, highlight=False)
    console().print(f"{report['settings']['points']} point(s): {counts['measured']} measured now, "
                    f"{counts['reused']} reused, {counts['failed']} failed; wrote {out['results']}, "
                    f"{out['paths']['json']}, {out['paths']['md'].name}, {out['paths']['html'].name}", markup=False)
    announce(log)
    return 3 if counts["failed"] else 0
