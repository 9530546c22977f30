"""`xopt profiles`: the device profiles."""
from __future__ import annotations

from xopt.cli.common import print_table

NAME = "profiles"
ORDER = 2
HELP = "device profiles"


def add_arguments(p, argv: list[str]) -> None:
    pass


def run(args) -> int:
    from xopt.profiles import DEFAULT_PROFILE, available, load_file

    rows = []
    for name, path in available().items():
        p = load_file(path)
        rows.append([name + (" (default)" if name == DEFAULT_PROFILE else ""), p.kind, f"{p.memory_mb:,.0f}",
                     f"{p.budget_mb:,.0f}", ", ".join(p.precisions), p.compute_capability or "–", p.description])
    print_table("device profiles", ["profile", "kind", "memory MB", "budget MB", "precisions", "CC", "description"],
                rows)
    return 0
