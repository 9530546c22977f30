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


class DefaultsHelp(argparse.HelpFormatter):
    """`--help` shows each flag's default (unless its help already says it): what a command
    does with no flags is never a surprise."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (action.option_strings and default not in (None, False, [], argparse.SUPPRESS) and "default" not in text
                and not isinstance(action, (argparse._HelpAction, argparse._VersionAction))):
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """argparse with the manners of its field: no prefix matching (`--variant` is not
    `--variants`), a misspelt command or flag answered with a suggestion, and defaults shown."""

    def __init__(self, *args, **kwargs):
        kwargs["allow_abbrev"] = False
        kwargs.setdefault("formatter_class", DefaultsHelp)
        super().__init__(*args, **kwargs)

    def format_usage(self) -> str:
        """The usage an error prints: argparse's, or for a command with dozens of flags (export's
        pass options) one line that says where they are listed."""
        text = super().format_usage()
        if text.count("\n") <= 8:
            return text
        positionals = " ".join(a.metavar or a.dest for a in self._actions if not a.option_strings)
        flags = sum(1 for a in self._actions if a.option_strings)
        return f"usage: {self.prog} [options] {positionals}\n({self.prog} --help lists its {flags} options)\n"

    def error(self, message: str):
        import re

        from xopt.errors import did_you_mean

        m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if m:
            hint = did_you_mean(m.group(1), re.findall(r"'([^']*)'", m.group(2)))
            if hint:
                message += f"; did you mean '{hint}'?"
        super().error(message)


def unknown_flags(parser: argparse.ArgumentParser, extra: list[str]) -> str:
    """'unrecognized arguments: --fp17 (did you mean --fp16?)' against `parser`'s own flags."""
    import difflib

    flags = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
    hints = {}
    for arg in extra:
        if arg.startswith("-"):
            flag = arg.split("=", 1)[0]
            close = difflib.get_close_matches(flag, flags, n=1, cutoff=0.6)
            if close:
                hints[flag] = close[0]
    if len(hints) == 1 and sum(a.startswith("-") for a in extra) == 1:
        text = f"did you mean {next(iter(hints.values()))}?"
    else:
        text = "; ".join(f"{f}: did you mean {c}?" for f, c in hints.items())
    return f"unrecognized arguments: {' '.join(extra)}" + (f" ({text})" if text else "")


def build_parser(argv: list[str] | None = None) -> Parser:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = Parser(prog="xopt", description="Export, optimize, run and profile models for edge GPUs.",
                    epilog="Headline: xopt export modnet --fp16 && xopt profile modnet")
    parser.add_argument("--version", action="version", version=f"xopt {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")  # sub-parsers are Parser too
    parser.commands = {}
    for mod in commands():
        parser.commands[mod.NAME] = sub.add_parser(mod.NAME, help=mod.HELP)
        mod.add_arguments(parser.commands[mod.NAME], argv)
    return parser


def main(argv=None) -> int:
    parser = build_parser(argv)
    args, extra = parser.parse_known_args(argv)
    if extra:  # the command's own usage, and the flag it most likely meant; exit 2 as argparse does
        (parser.commands.get(args.command) or parser).error(unknown_flags(parser.commands.get(args.command) or
                                                                          parser, extra))
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
