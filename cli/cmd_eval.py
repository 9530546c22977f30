"""`xopt eval`: accuracy against ground truth, per variant, beside its speed; report.json/md/html."""
from __future__ import annotations

import sys
from pathlib import Path

from xopt.cli.common import command_line, console

NAME = "eval"
ORDER = 5
HELP = "score variants (or saved predictions) against ground truth and write report.json/md/html"

_EPILOG = ("layouts: modnet DATA/images + DATA/mattes (by file stem), P3M-10k/AM-2k folders, YouTube-VOS "
           "JPEGImages/ + Annotations/; demucs a MUSDB18-HQ folder of tracks (mixture.wav + stems) or its root "
           "with train/ and test/; openfold NAME.fasta|.a3m with NAME.pdb|.cif. --predictions DIR: mattes "
           "DIR/<stem>.png, stems DIR/<track>/<stem>.wav, structures DIR/<name>.pdb")


def _model_options(argv: list[str]) -> dict[str, str]:
    """Dataset flags of the model named on the command line (all models' when none is)."""
    from xopt.cli.flags import model_in
    from xopt.errors import UserError
    from xopt.registry import get_model, list_models

    name = model_in(argv, NAME)
    try:
        specs = [get_model(name)] if name else list_models()
    except UserError:
        specs = []  # the command reports the unknown model
    out: dict[str, str] = {}
    for spec in specs:
        if spec.evaluation is not None:
            for key, text in spec.evaluation.options.items():
                out.setdefault(key, f"{spec.name}: {text}" if not name else text)
    return out


def add_arguments(p, argv: list[str]) -> None:
    p.epilog = _EPILOG
    p.add_argument("model")
    p.add_argument("data", nargs="?", default=None, help="the dataset folder (see the layouts below)")
    p.add_argument("--variants", default=None,
                   help="comma-separated variants (default: those the export holds; fp32 is always first)")
    p.add_argument("--artifacts", default=None, help="export directory (default artifacts/MODEL); missing variants are exported")
    p.add_argument("--backend", default="ort-cpu", help="runtime backend (see xopt list)")
    p.add_argument("--predictions", default=None, metavar="DIR",
                   help="score the predictions in DIR against the references instead of running the model")
    p.add_argument("--limit", type=int, default=None, help="score the first N items (by name) only")
    p.add_argument("--skip-missing", action="store_true",
                   help="score the complete pairs and list the incomplete ones in the report, instead of refusing")
    p.add_argument("--profile", default=None, help="device profile for variants that must be exported first")
    p.add_argument("--out", default=None, help="report directory (default reports/MODEL-eval)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="overwrite an existing report")
    group = p.add_argument_group("dataset options")
    for key, text in _model_options(argv).items():
        group.add_argument(f"--{key.replace('_', '-')}", dest=f"data_{key}", default=None, metavar="VALUE", help=text)


def run(args) -> int:
    from xopt.analysis.eval import evaluate_model
    from xopt.analysis.eval_report import print_summary, warning_lines, write_eval_reports
    from xopt.analysis.report import refuse_existing

    from xopt.atomic import check_writable
    from xopt.registry import get_model

    spec = get_model(args.model)
    for v in (args.variants or "").split(","):  # a wrong name is its own message, before the dataset is read
        if v:
            spec.variant(v)
    out = Path(args.out) if args.out else Path("reports") / f"{args.model}-eval"
    refuse_existing(out, args.force)  # before any work: report.md/html may be the user's own files
    check_writable(out)
    options = {k[len("data_"):]: v for k, v in vars(args).items() if k.startswith("data_") and v is not None}
    options["skip_missing"] = args.skip_missing
    variants = [v for v in args.variants.split(",") if v] if args.variants else None
    from xopt.analysis.quiet import announce, run_log

    with run_log(out, "eval", command_line()) as log:
        report = evaluate_model(args.model, args.data, variants, artifacts=args.artifacts, backend=args.backend,
                                predictions=args.predictions, options=options, limit=args.limit,
                                profile_name=args.profile, seed=args.seed, command=command_line())
    print_summary(report)
    for line in warning_lines(report):
        print(f"xopt: warning: {line}", file=sys.stderr)
    paths = write_eval_reports(report, out, force=args.force)
    console().print(f"wrote {paths['json']}, {paths['md'].name}, {paths['html'].name}", markup=False, soft_wrap=True)
    announce(log)
    return 0
