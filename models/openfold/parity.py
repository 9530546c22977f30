#!/usr/bin/env python3
"""The ONNX path against OpenFold's own AlphaFold module on the same features.

For each length a random chain (and, with --msa-rows > 1, a mutated alignment) is featurised
once (features.make_batch); OpenFold's `AlphaFold.forward` (rebuilt from the export's config
and weights) and the export's assembled session (`xopt.runtime.load(DIR).fold`) fold it, and
the C-alpha RMSD after superposition, lDDT-Ca, pLDDT and pTM differences are written as JSON.

    python -m xopt.models.openfold.parity --artifacts artifacts/openfold --variant fp32 \
        --lengths 57 100 --out benchmarks/results/openfold_parity.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from xopt.models.openfold.features import RESTYPES, make_batch, raw_features
from xopt.models.openfold.seq import Alignment, Query


def random_chain(n: int, rows: int, seed: int) -> tuple[Query, Alignment | None]:
    rng = np.random.default_rng(seed)
    seq = "".join(rng.choice(list(RESTYPES), n))
    if rows <= 1:
        return Query(f"random{n}", seq), None
    out = [seq]
    for _ in range(rows - 1):
        r = list(seq)
        for j in rng.choice(n, max(1, n // 5), replace=False):
            r[j] = "-" if rng.random() < 0.3 else rng.choice(list(RESTYPES))
        out.append("".join(r))
    return Query(f"random{n}", seq), Alignment(out, [[0] * n for _ in out], [f"r{i}" for i in range(rows)])


def compare(artifacts: Path, variant: str, lengths, rows: int, chunk: int | None, seed: int = 0) -> dict:
    import torch

    import xopt.runtime as rt
    from xopt.manifest import load as load_manifest
    from xopt.models.openfold import _cfg
    from xopt.models.openfold.fold import torch_batch
    from xopt.models.openfold.inputs import model_for
    from xopt.models.openfold.metrics import structure_drift

    manifest = load_manifest(artifacts)
    cfg, w = _cfg(manifest.config), manifest.weights
    model, _, _ = model_for(cfg, int(w.get("seed") or 0), w.get("path") if w.get("kind") == "checkpoint" else None)
    out = []
    with rt.load(manifest, variant=variant) as session:
        for n in lengths:
            query, aln = random_chain(int(n), rows, seed + int(n))
            batch = make_batch(raw_features(query, aln), int(cfg["msa_depth"]), int(cfg["extra_msa_depth"]),
                               int(cfg["recycles"]), seed)
            t0 = time.perf_counter()
            ours = session.fold(batch, **({"chunk_size": chunk, "attn_chunk_size": max(1, chunk // 4)} if chunk else {}))
            t1 = time.perf_counter()
            with torch.no_grad():
                ref = model(torch_batch(batch))
            t2 = time.perf_counter()
            ca_ref = ref["final_atom_positions"][:, 1].numpy()
            terms = structure_drift(ca_ref, ours["final_atom_positions"][:, 1], ref["plddt"].numpy(), ours["plddt"])
            out.append({"n": int(n), "msa_rows": rows, **{k: float(v) for k, v in terms.items()},
                        "ptm_abs_diff": abs(float(ref["predicted_tm_score"]) - float(ours["ptm"])),
                        "positions_max_abs": float(np.abs(ref["final_atom_positions"].numpy()
                                                          - ours["final_atom_positions"]).max()),
                        "onnx_seconds": round(t1 - t0, 2), "openfold_seconds": round(t2 - t1, 2)})
    return {"variant": variant, "chunk_size": chunk, "weights": w, "config": manifest.config, "results": out}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    ap.add_argument("--artifacts", type=Path, default=Path("artifacts/openfold"))
    ap.add_argument("--variant", default="fp32")
    ap.add_argument("--lengths", type=int, nargs="+", default=[57, 100])
    ap.add_argument("--msa-rows", type=int, default=1)
    ap.add_argument("--chunk", type=int, default=None, help="host-loop chunk size (default: the export's)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    from xopt.errors import UserError
    from xopt.machine import describe

    try:
        if args.out and args.out.exists() and not args.force:
            raise UserError(f"{args.out} exists", "pass --force or choose another --out")
        res = compare(args.artifacts, args.variant, args.lengths, args.msa_rows, args.chunk)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    res.update({"tool": "xopt.models.openfold.parity", "argv": sys.argv[1:], "machine": describe(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    for r in res["results"]:
        print(f"N={r['n']}: C-alpha RMSD {r['ca_rmsd']:.2e} A, lDDT-Ca {r['lddt_ca']:.4f}, "
              f"pLDDT max diff {r['plddt_max_abs_diff']:.2e}, pTM diff {r['ptm_abs_diff']:.1e}")
    if args.out:
        from xopt.atomic import write_json

        write_json(args.out, res, force=args.force)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
