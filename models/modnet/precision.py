"""MODNet's units for mixed precision: the MobileNetV2 backbone by stage (the inverted-residual
blocks that share a resolution and width), and each convolution block of the LR, HR and
fusion branches by its name in the paper's code."""
from __future__ import annotations

import re

# features index -> stage of torchvision's MobileNetV2 (t, c, n, s table): 0 is the stem conv,
# 18 the 1x1 head conv
_STAGES = {0: "stem", 1: "stage 1", 2: "stage 2", 3: "stage 2", 4: "stage 3", 5: "stage 3", 6: "stage 3",
           7: "stage 4", 8: "stage 4", 9: "stage 4", 10: "stage 4", 11: "stage 5", 12: "stage 5", 13: "stage 5",
           14: "stage 6", 15: "stage 6", 16: "stage 6", 17: "stage 7", 18: "head conv"}
_BACKBONE = re.compile(r"/lr_branch/backbone/(?:model/)?features\.(\d+)/")
_BRANCH = re.compile(r"/(lr_branch|hr_branch|f_branch)/(\w+)/")
_BRANCH_NAMES = {"lr_branch": "LR branch", "hr_branch": "HR branch", "f_branch": "fusion branch"}


def group(node) -> str | None:
    m = _BACKBONE.search(node.name)
    if m:
        return f"backbone {_STAGES.get(int(m.group(1)), 'features.' + m.group(1))}"
    m = _BRANCH.search(node.name)
    if m:
        return f"{_BRANCH_NAMES[m.group(1)]} {m.group(2)}"
    return None
