"""`xopt report`: print or compare reports."""
from __future__ import annotations

from xopt.cli.common import console, table

NAME = "report"
ORDER = 8
HELP = "print a report, or compare several report.json files"


def add_arguments(p, argv: list[str]) -> None:
    p.add_argument("reports", nargs="+")


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
    head, rows = comparison(reports, args.reports)
    console().print(table("comparison", head, rows))
    return 0
