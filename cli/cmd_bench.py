"""`xopt bench`: latency ratios in one run, drift beside them."""
from __future__ import annotations

from pathlib import Path
from xopt.cli.common import command_line

NAME = "bench"
ORDER = 7
HELP = "latency ratios in one run: torch eager vs ORT FP32 vs variants, with drift"


def add_arguments(p, argv: list[str]) -> None:
    p.add_argument("model")
    p.add_argument("--variants", default=None,
                   help="comma-separated variants timed against torch eager and ORT FP32 "
                        "(default: fp32,int8, or fp32,fp16 for a model without int8)")
    p.add_argument("--artifacts", default=None, help="export directory (default artifacts/MODEL); missing variants are "
                   "exported")
    p.add_argument("--frames", type=int, default=20, help="timed frames per contender, in interleaved rounds")
    p.add_argument("--profile", default=None, help="device profile name or TOML path (default rtx3060-laptop-12gb)")
    p.add_argument("--out", default=None, help="write the bench JSON here")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")


def run(args) -> int:
    from xopt.analysis.bench import bench_model
    from xopt.analysis.quiet import announce, run_log
    from xopt.atomic import check_writable, write_json
    from xopt.errors import OutputExistsError
    from xopt.cli.common import print_table
    from xopt.export.pipeline import default_out_dir
    from xopt.registry import get_model

    spec = get_model(args.model)  # an unknown model is named before any folder is made
    if args.variants is not None:
        variants = [v for v in args.variants.split(",") if v]
    else:
        from xopt.cli.cmd_profile import default_variants

        variants = default_variants(spec, ("fp32", "int8")) if "int8" in spec.variants else \
            default_variants(spec, ("fp32", "fp16"))
    for v in variants:  # a wrong name is its own message, before anything is exported
        spec.variant(v)
    if args.out and Path(args.out).exists() and not args.force:
        raise OutputExistsError(args.out)  # before the benchmark, not after it
    if args.out:
        check_writable(args.out)
    # the log goes beside the bench JSON, or beside the artifacts it measures
    folder = Path(args.out).parent if args.out else Path(args.artifacts or default_out_dir(args.model))
    with run_log(folder, "bench", command_line(), flag="--out" if args.out else "--artifacts") as log:
        result = bench_model(args.model, variants, artifacts=args.artifacts,
                             frames=args.frames, profile_name=args.profile, command=command_line())
    print_table(result["title"], result["head"], result["rows"])
    for line in result["verdicts"]:
        print(line)
    if args.out:
        from xopt.report_schema import public

        write_json(args.out, public(result), force=args.force)
    announce(log)
    if any(r.get("export_failure") for r in result["results"].values()):
        from xopt.cli.cmd_export import EXIT_SOME_FAILED

        return EXIT_SOME_FAILED
    return 0
