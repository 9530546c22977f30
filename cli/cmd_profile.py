"""`xopt profile`: variants against the FP32 baseline, written to report.json/md/html."""
from __future__ import annotations

from pathlib import Path
from xopt.cli.common import console, command_line

NAME = "profile"
ORDER = 4
HELP = "compare variants with the FP32 baseline and write report.json/md/html"


def add_arguments(p, argv: list[str]) -> None:
    p.add_argument("model")
    p.add_argument("--variants", default="fp32,fp16,int8", help="comma-separated variants")
    p.add_argument("--artifacts", default=None, help="export directory (default artifacts/MODEL); missing variants are exported")
    p.add_argument("--backend", default="ort-cpu", help="runtime backend (see xopt list)")
    p.add_argument("--frames", type=int, default=20, help="timed frames per variant after warm-up")
    p.add_argument("--profile", default=None, help="device profile (default rtx3060-laptop-12gb)")
    p.add_argument("--out", default=None, help="report directory (default reports/MODEL)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-e2e", action="store_true", help="skip end-to-end (pre/post-processing) timing")
    p.add_argument("--force", action="store_true", help="overwrite an existing report")


def run(args) -> int:
    from xopt.analysis.profiler import profile_model
    from xopt.analysis.report import print_summary, refuse_existing, write_reports

    out = Path(args.out) if args.out else Path("reports") / args.model
    refuse_existing(out, args.force)  # report.md/html too: they may be the user's own files
    variants = [v for v in args.variants.split(",") if v]
    report = profile_model(args.model, variants, artifacts=args.artifacts, backend=args.backend, frames=args.frames,
                           profile_name=args.profile, seed=args.seed, e2e=not args.no_e2e, command=command_line())
    print_summary(report)
    paths = write_reports(report, out, force=args.force)
    console().print(f"wrote {paths['json']}, {paths['md'].name}, {paths['html'].name}")
    return 0
