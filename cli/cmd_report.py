"""`xopt report`: print or compare reports."""
from __future__ import annotations

from xopt.cli.common import console, table
from xopt.errors import UserError

NAME = "report"
ORDER = 8
HELP = "print a report, or compare several report.json files"


def add_arguments(p, argv: list[str]) -> None:
    p.add_argument("reports", nargs="+", help="one report to print; OLD NEW for deltas; several to tabulate")
    p.add_argument("--fail-on-regression", type=float, default=None, metavar="PCT",
                   help="with OLD NEW: exit 3 when a latency percentile is more than PCT %% slower or a drift "
                        "term worse by more than its noise")


def run(args) -> int:
    from xopt.report_schema import load
    from xopt.analysis.report import comparison, kind_table, print_summary

    reports = [load(p) for p in args.reports]
    if len(reports) == 1 and reports[0]["kind"] == "profile":
        print_summary(reports[0])
        return 0
    if len(reports) == 1:  # a fit or bench report: its own table
        console().print(table(*kind_table(reports[0])))
        return 0
    if len(reports) == 2 and all(r["kind"] == "profile" for r in reports):
        return _deltas(reports, args)
    if args.fail_on_regression is not None:
        raise UserError("--fail-on-regression compares exactly two profile reports", "pass OLD NEW")
    head, rows = comparison(reports, args.reports)
    console().print(table("comparison", head, rows))
    return 0


def _deltas(reports, args) -> int:
    from xopt.analysis.regression import compare_reports

    if args.fail_on_regression is not None and not args.fail_on_regression >= 0:
        raise UserError(f"--fail-on-regression {args.fail_on_regression} is negative", "pass a percentage >= 0")
    old, new = reports
    if old["model"] != new["model"]:
        raise UserError(f"{args.reports[0]} is a {old['model']} report and {args.reports[1]} a {new['model']} one",
                        "compare two reports of the same model")
    res = compare_reports(old, new, args.fail_on_regression)
    console().print(table(f"{new['model']}: {args.reports[0]} -> {args.reports[1]}",
                          ["variant", "metric", "old", "new", "delta", "verdict"], res["rows"]))
    if args.fail_on_regression is None:
        return 0
    if res["regressions"]:
        for line in res["regressions"]:
            console().print(f"regression: {line}", markup=False)
        return 3
    console().print(f"no regression beyond {args.fail_on_regression:g}% latency or the drift noise", markup=False)
    return 0
