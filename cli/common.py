"""What every command shares: the console, the command line as typed, safe tables."""
from __future__ import annotations

import shlex
import sys


def console():
    from rich.console import Console

    return Console()


def command_line() -> str:
    return "xopt " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def print_table(title, head, rows, con=None) -> None:
    """A table readable in any width (analysis/report.py print_table)."""
    from xopt.analysis.report import print_table as show

    show(title, head, rows, con or console())


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


def ran_line(model: str, variant: str, backend: str, artifacts, weights: dict | None) -> str:
    """What `xopt run` ran: the variant, the backend and the weights (seeded-random or a checkpoint)."""
    w = weights or {}
    if w.get("kind") == "checkpoint":
        what = f"checkpoint {w.get('path')}" + (f" (sha256 {str(w['sha256'])[:12]})" if w.get("sha256") else "")
    elif w.get("kind") == "seeded-random":
        what = f"seeded-random weights (seed {w.get('seed', 0)}): not a trained model's output"
    else:
        what = f"{w.get('kind') or 'unrecorded'} weights"
    return f"ran {model} {variant} on {backend} from {artifacts}, {what}"


def export_missing(spec, variant: str, artifacts) -> None:
    """Export `variant` into `artifacts` when it is missing (xopt run on a fresh checkout); the
    exporters' own output goes to the calling command's log (analysis/quiet.py run_log). A
    variant whose export failed its gate is a one-line error naming why."""
    from xopt.analysis.profiler import ensure_variants
    from xopt.atomic import check_writable

    check_writable(artifacts, "--artifacts")  # named as this command's flag, before the build
    manifest = ensure_variants(spec.name, [variant], artifacts, None)
    record = manifest.failure(variant) if not manifest.has(variant) else None
    if record is not None:
        from xopt.errors import UserError

        raise UserError(f"variant {variant} could not be built: {record['error']}",
                        "run another --variant, or gate it on a checkpoint (--checkpoint) or a looser --max-drop")
