"""`xopt profile`: variants against the FP32 baseline, written to report.json/md/html."""
from __future__ import annotations

from pathlib import Path

from xopt.cli.common import command_line, console

NAME = "profile"
ORDER = 4
HELP = "compare variants with the FP32 baseline and write report.json/md/html"


def add_arguments(p, argv: list[str]) -> None:
    from xopt.cli.flags import model_in

    p.add_argument("model")
    p.add_argument("--variants", default=None,
                   help="comma-separated variants (default: fp32,fp16,int8, those of them the model has)")
    p.add_argument("--artifacts", default=None, help="export directory (default artifacts/MODEL); missing variants are exported")
    p.add_argument("--backend", default="ort-cpu", help="runtime backend (see xopt list)")
    p.add_argument("--frames", type=int, default=20, help="timed frames per variant after warm-up (at least 1)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs after the first inference (default 1)")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads of each session (default: ONNX Runtime's, one per physical core)")
    p.add_argument("--inputs", default=None, metavar="FILE",
                   help="user-supplied inputs in Polygraphy's JSON format (polygraphy run --save-inputs)")
    p.add_argument("--profile", default=None, help="device profile (default rtx3060-laptop-12gb)")
    p.add_argument("--out", default=None, help="report directory (default reports/MODEL)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-e2e", action="store_true", help="skip end-to-end (pre/post-processing) timing")
    g = p.add_argument_group("any ONNX model (MODEL is a path to an .onnx file)")
    g.add_argument("--shapes", default=None, metavar="NAME:DxD,...",
                   help="input shapes for dynamic dimensions, e.g. input:1x3x512x512 (as trtexec --shapes)")
    g.add_argument("--val-range", default=None, metavar="[LO,HI]",
                   help="value range of generated inputs, [LO,HI] or NAME:[LO,HI];... (default [0,1], as Polygraphy)")
    p.add_argument("--previews", type=int, default=2, metavar="N",
                   help="profiled inputs whose outputs the report shows, FP32 beside each variant (0: none)")
    p.add_argument("--force", action="store_true", help="overwrite report files xopt did not write")
    _add_shape_flags(p, model_in(argv, "profile"))


def _add_shape_flags(p, model: str | None) -> None:
    """Input-size flags the model's spec declares (--height/--width, --batch, --residues, ...)."""
    from xopt.errors import UserError
    from xopt.registry import list_models

    try:
        specs = list_models()
    except UserError:
        return
    flags = {}
    for spec in specs:
        if model in (None, spec.name):
            for f in spec.shape_flags:
                flags.setdefault(f.flag, (f, []))[1].append(spec.name)
    group = p.add_argument_group("input shapes (set the device profile's target for this run)")
    for name, (f, owners) in sorted(flags.items()):
        who = "" if model else f" [{', '.join(owners)}]"
        group.add_argument(f"--{name}", type=f.type, default=None, dest=f"shape_{name.replace('-', '_')}",
                           help=f"{f.help}{who}")


def shape_targets(spec, args) -> dict:
    from xopt.errors import UserError

    out, known = {}, set()
    for f in spec.shape_flags:
        known.add(f.flag)
        value = getattr(args, f"shape_{f.flag.replace('-', '_')}", None)
        if value is None:
            continue
        if not value > 0:
            raise UserError(f"--{f.flag} {value} is not positive", f"pass a positive --{f.flag}")
        out[f.target] = [value] if f.as_list else value
    for name, value in vars(args).items():  # a flag of another model: say so rather than ignore it
        flag = name[len("shape_"):].replace("_", "-") if name.startswith("shape_") else None
        if flag and value is not None and flag not in known:
            raise UserError(f"--{flag} is not an input size of {spec.name}",
                            f"see xopt profile {spec.name} --help for its flags")
    return out


def is_onnx_file(model: str) -> bool:
    return model.lower().endswith(".onnx") or Path(model).is_file()


def run(args) -> int:
    if is_onnx_file(args.model):
        from xopt.cli.cmd_compare import profile_files

        return profile_files([args.model], args, default_out=Path("reports") / Path(args.model).stem)
    if args.shapes or args.val_range:
        from xopt.errors import UserError

        raise UserError("--shapes and --val-range are for ONNX files without a model spec",
                        f"use {args.model}'s own size flags (xopt profile {args.model} --help)")
    from xopt.analysis.profiler import profile_model, validate_request
    from xopt.analysis.quiet import announce, run_log
    from xopt.atomic import check_writable
    from xopt.analysis.report import print_summary, refuse_existing, write_reports

    from xopt.registry import get_model

    variants = [v for v in args.variants.split(",") if v] if args.variants is not None else \
        default_variants(get_model(args.model), ("fp32", "fp16", "int8"))
    spec, _ = validate_request(args.model, variants, args.backend, args.frames, args.warmup, args.threads,
                               args.profile)
    targets = shape_targets(spec, args)
    if args.previews < 0:
        from xopt.errors import UserError

        raise UserError(f"--previews {args.previews} is negative", "pass --previews 0 (none) or more")
    if args.inputs and not Path(args.inputs).is_file():
        from xopt.errors import UserError

        raise UserError(f"--inputs {args.inputs} is not a file", "pass a Polygraphy JSON inputs file")
    out = Path(args.out) if args.out else Path("reports") / args.model
    refuse_existing(out, args.force)  # after validation: a bad flag gets its own message
    check_writable(out)  # before measuring: a report that cannot be written would lose the work
    import tempfile

    with tempfile.TemporaryDirectory(prefix="xopt-profile-") as tmp:
        with run_log(out, "profile", command_line()) as log:
            report = profile_model(args.model, variants, artifacts=args.artifacts, backend=args.backend,
                                   frames=args.frames, profile_name=args.profile, seed=args.seed, e2e=not args.no_e2e,
                                   command=command_line(), warmup=args.warmup, threads=args.threads,
                                   targets_override=targets, inputs_file=args.inputs, log=log,
                                   previews_dir=Path(tmp) / "previews" if args.previews > 0 else None,
                                   previews=args.previews)
        report["settings"]["log"] = log.relative_to(out).as_posix()
        print_summary(report)
        paths = write_reports(report, out, force=args.force,
                              previews_dir=Path(tmp) / "previews" if args.previews > 0 else None)
    console().print(f"wrote {paths['json']}, {paths['md'].name}, {paths['html'].name}", markup=False, soft_wrap=True)
    not_built = [r["variant"] for r in report["results"] if r.get("export_failure")]
    if not_built:  # the report holds them as rows; the exit code tells a script (README: exit status)
        from xopt.cli.cmd_export import EXIT_SOME_FAILED

        console().print(f"exit {EXIT_SOME_FAILED}: {', '.join(not_built)} could not be built", markup=False)
    announce(log)
    if not_built:
        return EXIT_SOME_FAILED
    return 0


def default_variants(spec, wanted) -> list[str]:
    """The variants a command runs with no --variants: those of `wanted` the model has."""
    return [v for v in wanted if v in spec.variants]
