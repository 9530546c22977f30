"""What every command shares: the console, the command line as typed, safe tables."""
from __future__ import annotations

import shlex
import sys


def console():
    from rich.console import Console

    return Console()


def command_line() -> str:
    return "xopt " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def table(title, head, rows):
    from rich.markup import escape
    from rich.table import Table

    # Cells hold user text such as 'pip install "xopt[cpu]"': never let rich read it as markup.
    t = Table(title=escape(title))
    for h in head:
        t.add_column(escape(h), overflow="fold")
    for r in rows:
        t.add_row(*[escape(str(c)) for c in r])
    return t


def export_missing(spec, variant: str, artifacts) -> None:
    """Export `variant` into `artifacts` when it is missing (xopt run on a fresh checkout), the
    exporters' own output kept in the export log as `xopt export` keeps it."""
    from xopt.analysis.profiler import ensure_variants
    from xopt.analysis.quiet import log_summary, quiet_export
    from xopt.atomic import check_writable

    check_writable(artifacts, "--artifacts")  # named as this command's flag, before the build

    with quiet_export(spec.name) as log:
        manifest = ensure_variants(spec.name, [variant], artifacts, None)
    note = log_summary(log)
    if note:  # stderr: stdout lists the files written
        print(f"xopt: {note}", file=sys.stderr)
    record = manifest.failure(variant) if not manifest.has(variant) else None
    if record is not None:
        from xopt.errors import UserError

        raise UserError(f"variant {variant} could not be built: {record['error']}",
                        "run another --variant, or gate it on a checkpoint (--checkpoint) or a looser --max-drop")
