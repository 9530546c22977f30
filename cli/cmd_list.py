"""`xopt list`: models, variants, backends and passes, and what is unavailable here."""
from __future__ import annotations

from xopt.cli.common import console, print_table

NAME = "list"
ORDER = 1
HELP = "models, variants, backends (and whether each works here), passes"


def add_arguments(p, argv: list[str]) -> None:
    pass


def run(args) -> int:
    from xopt.optimize.base import PASSES, all_passes
    from xopt.registry import MODELS, list_models
    from xopt.runtime.backends.base import BACKENDS, all_backends

    con = console()
    print_table("models", ["model", "task", "variants", "configs", "graph covers"],
                [[s.name, s.task, ", ".join(s.variants), ", ".join(s.configs), s.covers] for s in list_models()], con)
    rows = []
    for b in all_backends():
        try:
            ok, why = b.probe()
        except Exception as exc:  # a probe must never take `xopt list` down; show why it failed
            ok, why = False, f"probe failed: {exc}"
        rows.append([b.name, "yes" if ok else "no", why, b.description])
    print_table("backends", ["backend", "works here", "why", "description"], rows, con)
    print_table("optimization passes", ["pass", "description", "options"],
                [[p.name, p.description, ", ".join(o.name for o in p.options.options)] for p in all_passes()], con)
    broken = [[r.kind, name, why] for r in (MODELS, PASSES, BACKENDS) for name, why in r.unavailable().items()]
    if broken:  # a module that failed to import is shown, not silently missing
        print_table("unavailable here", ["kind", "name", "why"], broken, con)
    return 0
