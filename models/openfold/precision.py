"""OpenFold's units for mixed precision: one Evoformer block each (its MSA row and column
attention and its pair core), by the legacy exporter's node names (/blocks.K/...)."""
from __future__ import annotations

import re

_BLOCK = re.compile(r"^/(?:evoformer/)?blocks\.(\d+)/")


def group(node) -> str | None:
    m = _BLOCK.match(node.name)
    return f"Evoformer block {m.group(1)}" if m else None
