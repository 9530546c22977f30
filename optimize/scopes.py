"""Select graph nodes by the spec's named scopes (node-name prefixes such as "/backbone/")."""
from __future__ import annotations

from xopt.errors import UserError


def nodes_in_scopes(model, scope_names, scopes: dict[str, list[str]], op_types=None) -> list[str]:
    prefixes = []
    for name in scope_names:
        if name not in scopes:
            raise UserError(f"unknown scope {name!r}", f"this model defines: {', '.join(sorted(scopes)) or 'none'}")
        prefixes.extend(scopes[name])
    picked = [n.name for n in model.graph.node
              if any(n.name.startswith(p) for p in prefixes) and (not op_types or n.op_type in op_types)]
    if not picked:
        raise UserError(f"scope {', '.join(scope_names)} matched no node of the graph",
                        "check the spec's scope prefixes against the exported node names")
    return picked
