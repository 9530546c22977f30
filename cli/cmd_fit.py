"""`xopt fit`: the largest input per variant inside a device budget."""
from __future__ import annotations

from pathlib import Path

from xopt.errors import UserError
from xopt.cli.common import console, command_line, print_table

NAME = "fit"
ORDER = 6
HELP = "largest input that fits the device profile, per variant"


def add_arguments(p, argv: list[str]) -> None:
    p.add_argument("model")
    p.add_argument("--profile", default=None)
    p.add_argument("--config", default=None)
    p.add_argument("--out", default=None, help="report directory (default reports/MODEL-fit)")
    p.add_argument("--force", action="store_true")


def fit_default_out(model: str) -> Path:
    return Path("reports") / f"{model}-fit"


def fit_paths(model: str) -> dict:
    """Where a fit finds the export to calibrate against and an earlier fit report to reuse:
    the defaults `xopt export` and `xopt fit` write."""
    from xopt.export.pipeline import default_out_dir

    return {"artifacts": str(default_out_dir(model)), "fit_report": str(fit_default_out(model) / "report.json")}


def run(args) -> int:
    from xopt.analysis.report import refuse_existing, write_reports
    from xopt.atomic import check_writable
    from xopt.profiles import get_profile
    from xopt.registry import get_model

    spec = get_model(args.model)
    if spec.fit is None:
        raise UserError(f"model {spec.name} has no fit-to-budget search", "use xopt profile for its memory")
    out = Path(args.out) if args.out else fit_default_out(args.model)
    refuse_existing(out, args.force)
    check_writable(out)  # before the search: a report that cannot be written would lose it
    from xopt.analysis.quiet import announce, run_log

    profile, config = get_profile(args.profile), spec.config(args.config)
    with run_log(out, "fit", command_line()) as log:
        report = spec.fit.search(spec, profile, config, {"command": command_line(), **fit_paths(spec.name)})
    section = report.get("extra", {}).get("fit", {})
    if section.get("rows"):
        print_table(f"{spec.name}: fit to {report['profile']['name']}", section["head"], section["rows"])
    for line in section.get("notes", []):  # how the figures were obtained, and what the fit chose
        console().print(line, markup=False, highlight=False)
    paths = write_reports(report, out, force=args.force)
    console().print(f"wrote {paths['json']}, {paths['md'].name}, {paths['html'].name}", markup=False, soft_wrap=True)
    announce(log)
    return 0
