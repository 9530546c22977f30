"""What `xopt.runtime.load` returns for an OpenFold export: the spec's `assemble` hook.

`FoldSession` is a Session over the variant's graphs. `run(feeds)` is the Evoformer trunk
(m, z, msa_mask, pair_mask -> m_out, z_out, s) like the main graph: chunked variants run it
host-driven over the trunk-op graphs (host.py) with the entry's chunk settings, unchunked ones
run the main graph. `fold(batch)` is the whole model (hostfold.py). numpy only.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from xopt.runtime.backends.base import Session

HOST_KEYS = ("chunk_size", "attn_chunk_size", "storage")


def host_settings(settings: Mapping, overrides: Mapping | None = None) -> dict:
    out = {k: settings.get(k) for k in HOST_KEYS}
    out.update({k: v for k, v in (overrides or {}).items() if k in HOST_KEYS})
    out["storage"] = out.get("storage") or "fp32"
    return out


class FoldSession(Session):
    def __init__(self, main: Session, graphs: Mapping[str, Session], entry: Mapping):
        self.main, self.graphs, self.entry = main, dict(graphs), dict(entry)
        self.settings = dict(entry.get("settings") or {})
        self.meta = self.settings.get("graph_meta") or {}
        self.backend = main.backend
        super().__init__(main.path)

    def _load(self, path, **_ignored) -> None:
        m = self.main
        self.input_names, self.output_names = list(m.input_names), list(m.output_names)
        self.input_shapes, self.output_shapes = dict(m.input_shapes), dict(m.output_shapes)
        self.providers = list(m.providers)
        self.timings.load_ms = m.timings.load_ms + sum(g.timings.load_ms for g in self.graphs.values())
        if self.host_driven:  # the op graphs hold the same weights: free the main graph's copy
            m.close()

    @property
    def host_driven(self) -> bool:
        h = host_settings(self.settings)
        return bool(h["chunk_size"] or h["attn_chunk_size"] or h["storage"] != "fp32")

    def _run(self, feeds):
        if not self.host_driven:
            return self.main.run(feeds)
        return self.trunk(feeds)

    def trunk(self, feeds, **overrides) -> dict:
        """The Evoformer stack host-driven over its op graphs (the inputs are not modified)."""
        from xopt.models.openfold.host import STORAGE, StackRunner, f32

        h = host_settings(self.settings, overrides)
        dt = STORAGE[h["storage"]]
        m, z = np.array(feeds["m"], dtype=dt, copy=True), np.array(feeds["z"], dtype=dt, copy=True)
        msa_mask, pair_mask = f32(feeds["msa_mask"]), f32(feeds["pair_mask"])
        StackRunner(self.graphs, "evo", int(self.meta["blocks"]["evo"]), h["chunk_size"], h["attn_chunk_size"],
                    h["storage"])(m, z, msa_mask, pair_mask)
        s = self.graphs["single"].run({"m0": f32(m[0])})["s"]
        return {"m_out": f32(m) * msa_mask[..., None], "z_out": f32(z) * pair_mask[..., None],
                "s": s * np.diagonal(pair_mask)[:, None]}

    def fold(self, batch: Mapping[str, np.ndarray], tick=None, **overrides) -> dict:
        """AlphaFold2 end to end on a feature batch (features.make_batch)."""
        from xopt.models.openfold.hostfold import HostFold

        h = host_settings(self.settings, overrides)
        return HostFold(self.graphs, self.meta, h["chunk_size"], h["attn_chunk_size"], h["storage"], tick)(batch)

    def _close(self) -> None:
        for g in self.graphs.values():
            g.close()
        self.graphs = {}
        self.main.close()  # a no-op when host-driven (closed at load)


def assemble(main: Session, graphs: Mapping[str, Session], entry: Mapping) -> Session:
    return FoldSession(main, graphs, entry)
