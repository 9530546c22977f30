"""Nodes grouped into the units a mixed-precision search keeps in higher precision together,
named as a reader of the model would name them ("backbone stage 2", "Evoformer block 3").

A spec names its units with `precision_group(node)`; nodes it leaves unnamed fall back to the
module path of their weight (exporters name parameters by module path, e.g.
model.encoder.0.conv.weight -> model.encoder.0)."""
from __future__ import annotations


def weight_of(node, initializers: set[str]) -> str:
    return next((t for t in node.input[1:] if t in initializers), "")


def scope_path(node) -> str:
    """The module path torch's dynamo exporter records for a node (metadata
    pkg.torch.onnx.name_scopes: ['', 'model', 'model.encoder.0', ..., op]); '' if none."""
    import ast

    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = [x for x in ast.literal_eval(prop.value) if x]
            except (ValueError, SyntaxError):
                return ""
            return scopes[-2] if len(scopes) >= 2 else ""
    return ""


def module_path(node, initializers: set[str], depth: int) -> str:
    weight = weight_of(node, initializers)
    module = scope_path(node) or (weight.rsplit(".", 1)[0] if "." in weight else "")
    if module:
        return ".".join(module.split(".")[:depth])
    scope = node.name.strip("/").split("/")[:-1]  # legacy exporter names: /scope/path/OpType_k
    return "/".join(scope[:depth]) or node.name


def groups(model, op_types, label=None, depth: int = 3, never: set[str] = frozenset(),
           named_only: bool = False) -> dict[str, list[str]]:
    """{unit: [node names]} over the nodes of `op_types` (empty: every op), in graph order;
    `never` are left out (nodes that stay in high precision whatever the search finds), and with
    `named_only` so are the nodes the spec's `label` does not name."""
    inits = {i.name for i in model.graph.initializer}
    out: dict[str, list[str]] = {}
    for node in model.graph.node:
        if (op_types and node.op_type not in op_types) or node.name in never:
            continue
        key = label(node) if label is not None else None
        if key is None and named_only:
            continue
        key = key or module_path(node, inits, depth)
        out.setdefault(key, []).append(node.name)
    return out
