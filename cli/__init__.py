"""The `xopt` command line. Commands parse arguments and call library functions; nothing
heavy is imported before a command runs, so `xopt --help` works without the extras.
"""
from __future__ import annotations

import argparse
import sys
import warnings

from xopt import __version__
from xopt.errors import UserError

def commands() -> list:
    """The command modules `cli/cmd_*.py`, in help order: a new command is a new file."""
    import importlib
    import pkgutil

    import xopt.cli as pkg

    mods = [importlib.import_module(f"xopt.cli.{i.name}") for i in pkgutil.iter_modules(pkg.__path__)
            if i.name.startswith("cmd_")]
    return sorted(mods, key=lambda m: (m.ORDER, m.NAME))


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="xopt", description="Export, optimize, run and profile models for edge GPUs.",
                                     epilog="Headline: xopt export modnet --fp16 && xopt profile modnet")
    parser.add_argument("--version", action="version", version=f"xopt {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in commands():
        mod.add_arguments(sub.add_parser(mod.NAME, help=mod.HELP), argv)
    return parser


def main(argv=None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    from xopt import progress
    from xopt.extras import ort_conflict

    progress.set_quiet(args.quiet)
    conflict = ort_conflict()
    if conflict:
        warnings.warn(conflict, RuntimeWarning, stacklevel=1)
    try:
        run = next(m.run for m in commands() if m.NAME == args.command)
        return run(args) or 0
    except UserError as exc:
        print(f"xopt: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("xopt: interrupted; nothing half-written was kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
