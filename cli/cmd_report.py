"""`xopt report`: print or compare reports."""
from __future__ import annotations

from xopt.cli.common import console, print_table
from xopt.errors import UserError

NAME = "report"
ORDER = 8
HELP = "print a report, or compare several report.json files"


def add_arguments(p, argv: list[str]) -> None:
    p.add_argument("reports", nargs="+", help="one report to print; OLD NEW for deltas; several to tabulate")
    p.add_argument("--fail-on-regression", type=float, default=None, metavar="PCT",
                   help="with OLD NEW: exit 3 when a latency percentile is more than PCT %% slower or a drift "
                        "term worse by more than its noise")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="also write report.html (self-contained: charts, previews) and report.md there: one report "
                        "re-rendered, OLD NEW as deltas with their direction, several as one table")
    p.add_argument("--force", action="store_true", help="overwrite files in --out that xopt did not write")


def run(args) -> int:
    from xopt.report_schema import load
    from xopt.analysis.report import comparison, kind_table, print_summary

    reports = [load(p) for p in args.reports]
    if args.out:
        from xopt.analysis.report import refuse_existing
        from xopt.atomic import check_writable

        refuse_existing(args.out, args.force)  # before any work
        check_writable(args.out)
    if len(reports) == 1:
        if reports[0]["kind"] == "profile":
            print_summary(reports[0])
        else:  # a fit, bench, eval or sweep report: its own table
            print_table(*kind_table(reports[0]))
        if args.out:
            _write_one(reports[0], args)
        return 0
    if len(reports) == 2 and all(r["kind"] == "profile" for r in reports):
        return _deltas(reports, args)
    if args.fail_on_regression is not None:
        raise UserError("--fail-on-regression compares exactly two profile reports", "pass OLD NEW")
    head, rows = comparison(reports, args.reports)
    print_table("comparison", head, rows)
    if args.out:
        from xopt.analysis import report_compare as rc

        _wrote(rc.write(args.out, rc.table_html(reports, args.reports, head, rows),
                        rc.table_markdown(reports, args.reports, head, rows), args.force))
    return 0


def _wrote(paths) -> None:
    console().print(f"wrote {paths['html']}, {paths['md'].name}", markup=False)


def _write_one(report, args) -> None:
    from pathlib import Path

    from xopt.analysis import report_compare as rc
    from xopt.analysis.report import render_markdown
    from xopt.analysis.report_html import render_html

    src = Path(args.reports[0])
    src = src if src.is_dir() else src.parent
    _wrote(rc.write(args.out, render_html(report, src), render_markdown(report), args.force, report, src))


def _deltas(reports, args) -> int:
    from xopt.analysis.regression import compare_reports

    if args.fail_on_regression is not None and not args.fail_on_regression >= 0:
        raise UserError(f"--fail-on-regression {args.fail_on_regression} is negative", "pass a percentage >= 0")
    old, new = reports
    if old["model"] != new["model"]:
        raise UserError(f"{args.reports[0]} is a {old['model']} report and {args.reports[1]} a {new['model']} one",
                        "compare two reports of the same model")
    res = compare_reports(old, new, args.fail_on_regression)
    print_table(f"{new['model']}: {args.reports[0]} -> {args.reports[1]}",
                ["variant", "metric", "old", "new", "delta", "verdict"], res["rows"])
    if args.out:
        from xopt.analysis import report_compare as rc
        from xopt.analysis.report_html import render_comparison_html

        res["gated"] = args.fail_on_regression is not None
        labels = (args.reports[0], args.reports[1])
        _wrote(rc.write(args.out, render_comparison_html(old, new, labels, res),
                        rc.comparison_markdown(old, new, labels, res), args.force))
    if args.fail_on_regression is None:
        return 0
    if res["regressions"]:
        for line in res["regressions"]:
            console().print(f"regression: {line}", markup=False)
        return 3
    console().print(f"no regression beyond {args.fail_on_regression:g}% latency or the drift noise", markup=False)
    return 0
