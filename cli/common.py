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
