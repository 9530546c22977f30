"""`toy-run`: a plug-in model with its own numpy pipeline, registered by hand like a third-party
spec, to show that `xopt run` gives it the same input checks and notes as the built-in models:
its `check_input` hook runs before the export, its notes reach stderr and the batch record.

Its input is a text file "pixels: v v v ..." (values on [-1, 1]); its output an .npy matte."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from toy_model import TOY
from xopt.errors import OutputExistsError, UserError
from xopt.registry import MODELS, register
from xopt.runtime.pipeline import Pipeline

SIDE = 8


class PixelsPipeline(Pipeline):
    input_kinds = ("pixels",)

    @classmethod
    def check_input(cls, path: Path) -> dict:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
        if not text.startswith("pixels:"):
            raise UserError(f"{path} is not a pixels file", "start it with 'pixels:'")
        values = text.split()[1:]
        return {"kind": "pixels", "values": len(values), "notes": [f"{path}: {len(values)} values"]}

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        return self.session.run({"input": raw})["output"]

    def process_file(self, src, dst, force=False, progress=None):
        src, dst = Path(src), Path(dst)
        if dst.exists() and not force:
            raise OutputExistsError(dst)
        values = np.array([float(v) for v in src.read_text().split()[1:]], np.float32)
        want = 3 * SIDE * SIDE
        x = np.resize(values, want).reshape(1, 3, SIDE, SIDE)  # repeats what is there to fill the image
        if len(values) < want:
            self.note(f"{src}: read {len(values)} of {want} values: the file ends early", failed=True)
        from xopt.atomic import atomic_path

        with atomic_path(dst, force=force) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, self(x))
        return [dst]

    def batch_target(self, src, out_dir):
        return Path(out_dir) / f"{Path(src).stem}.npy"


PLUGIN = dataclasses.replace(TOY, name="toy-run", pipeline="hardening.plugin_pipeline:PixelsPipeline")


def ensure_registered():
    if "toy-run" not in MODELS.items:
        register(PLUGIN)
    return PLUGIN
