"""`xopt compare A.onnx B.onnx`: two graphs on the same inputs, the tensor drift of B against A
(Polygraphy's comparison), latency, memory and per-node time of each."""
from __future__ import annotations

from pathlib import Path

from xopt.cli.common import command_line, console
from xopt.errors import UserError

NAME = "compare"
ORDER = 9
HELP = "two ONNX graphs on the same inputs: drift of B against A, latency, memory, per-node time"


def add_arguments(p, argv: list[str]) -> None:
    p.add_argument("a", metavar="A.onnx", help="the reference graph")
    p.add_argument("b", metavar="B.onnx", help="the graph compared with it (e.g. its FP16 conversion)")
    p.add_argument("--shapes", default=None, metavar="NAME:DxD,...", help="input shapes for dynamic dimensions")
    p.add_argument("--val-range", default=None, metavar="[LO,HI]", help="value range of generated inputs")
    p.add_argument("--inputs", default=None, metavar="FILE", help="inputs in Polygraphy's JSON format")
    p.add_argument("--frames", type=int, default=20, help="timed runs per graph")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs after the first")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: ONNX Runtime's)")
    p.add_argument("--atol", type=float, default=1e-5, help="absolute tolerance (Polygraphy's default 1e-5)")
    p.add_argument("--rtol", type=float, default=1e-5, help="relative tolerance, against the reference's peak")
    p.add_argument("--profile", default=None, help="device profile for the memory budget")
    p.add_argument("--out", default=None, help="report directory (default reports/compare-A-B)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="overwrite report files xopt did not write")


def profile_files(paths, args, default_out: Path, tolerance: dict | None = None) -> int:
    """Shared by `xopt profile FILE.onnx` and `xopt compare`: measure, report, print."""
    from xopt.analysis.generic import profile_onnx
    from xopt.analysis.quiet import announce, run_log
    from xopt.analysis.report import print_summary, refuse_existing, write_reports
    from xopt.atomic import check_writable

    if args.warmup < 0 or (args.threads is not None and args.threads < 1):
        raise UserError("--warmup must be >= 0 and --threads >= 1", "fix the flag")
    out = Path(args.out) if args.out else default_out
    refuse_existing(out, args.force)
    check_writable(out)  # before measuring: a report that cannot be written would lose the work
    with run_log(out, "compare" if tolerance is not None else "profile", command_line()) as log:
        report = profile_onnx(paths, args.shapes, args.val_range, args.inputs, args.frames, args.warmup,
                              args.threads, args.profile, args.seed, command_line(), log)
    verdict = None
    if tolerance is not None and len(report["results"]) > 1:
        verdict = _verdict(report, tolerance)
        report["extra"]["comparison"] = verdict
    report["settings"]["log"] = log.relative_to(out).as_posix()
    print_summary(report)
    paths_written = write_reports(report, out, force=args.force)
    from xopt.analysis.report import say

    for r in report["results"]:
        b = r.get("breakdown") or {}
        if b.get("top_ops"):
            tops = ", ".join(f"{o['op']} {o['share']:.0%}" for o in b["top_ops"][:5])
            say(console(), f"{r['variant']}: time by operator: {tops}")
    if verdict:
        say(console(), verdict["text"])
    console().print(f"wrote {paths_written['json']}, {paths_written['md'].name}, {paths_written['html'].name}",
                    markup=False, soft_wrap=True)
    announce(log)
    return 3 if verdict and not verdict["passed"] else 0


def _verdict(report: dict, tolerance: dict) -> dict:
    from xopt.compare import passed

    a, b = report["results"][0], report["results"][1]
    diffs = b["drift"].get("tensor") or {}
    ok = bool(diffs) and passed(diffs, tolerance)
    worst = ", ".join(f"{n}: max_abs={d['max_abs']:.3g} max_rel={d['max_rel']:.3g} cosine={d['cosine']:.6f}"
                      for n, d in diffs.items())
    text = (f"{'PASSED' if ok else 'FAILED'}: {b['variant']} vs {a['variant']} within atol {tolerance['atol']:g} + "
            f"rtol {tolerance['rtol']:g} x max|ref| ({worst})")
    return {"passed": ok, "tolerance": tolerance, "text": text}


def run(args) -> int:
    stem = f"compare-{Path(args.a).stem}-{Path(args.b).stem}"
    return profile_files([args.a, args.b], args, Path("reports") / stem, {"atol": args.atol, "rtol": args.rtol})
