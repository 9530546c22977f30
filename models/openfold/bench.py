#!/usr/bin/env python3
"""Peak memory and time of OpenFold's Evoformer trunk, chunked vs unchunked, per precision.

One run, same machine: for each N, precision and chunk setting, a fresh process builds
`--blocks` Evoformer blocks at AlphaFold2's real widths (c_m 256, c_z 128, 8/4 heads, the
`default` config) and runs them once as OpenFold runs inference (no grad, in place).
Peak = activation peak including the m and z inputs (host VmHWM on CPU, allocator peak on
GPU); blocks run one after another, so it is the whole trunk's activation peak. The trunk's
weights (a constant, not touched by chunking) are reported separately. Time is the minimum
of `--repeats` runs of `--blocks` blocks (wall and process CPU time), scaled to 48 blocks;
the comparison uses CPU time, which a busy shared host disturbs far less than wall time.

Target (issue 4): >= 4x lower peak at <= 1.3x the time.

    python -m xopt.models.openfold.bench --n 128 256 --chunks 4 --precisions fp32 bf16 fp16 \
        --out benchmarks/results/openfold_trunk.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    ap.add_argument("--n", type=int, nargs="+", default=[128, 256], help="residue counts")
    ap.add_argument("--msa-rows", type=int, default=128, help="MSA rows S of the trunk input")
    ap.add_argument("--chunks", type=int, nargs="+", default=[4], help="chunk sizes to compare with unchunked")
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"])
    ap.add_argument("--blocks", type=int, default=1, help="Evoformer blocks actually run (real model: 48)")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per point (minimum kept)")
    ap.add_argument("--config", default="default", help="xopt openfold config (default: real shapes)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads per point (1: CPU time equals work, steady on a shared host)")
    ap.add_argument("--out", type=Path, help="write the JSON here (e.g. benchmarks/results/openfold_trunk.json)")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)

    from xopt.errors import UserError
    from xopt.models.openfold.budget import _run_point, variant_name, variant_settings
    from xopt.models.openfold import SPEC
    from xopt.machine import describe

    if args.out and args.out.exists() and not args.force:
        print(f"{args.out} exists; pass --force", file=sys.stderr)
        return 1
    try:
        cfg = SPEC.config(args.config)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    params = _run_point({"what": "parameters", "config": cfg})
    rows, t_start = [], time.time()
    for n in args.n:
        for precision in args.precisions:
            for chunk in [None, *args.chunks]:
                settings = variant_settings(precision, chunk)
                req = {"config": cfg, "settings": settings, "s": args.msa_rows, "n": n, "blocks": args.blocks,
                       "repeats": args.repeats, "threads": args.threads}
                try:
                    r = _run_point(req, timeout=3600)
                except Exception as exc:  # a precision the host cannot run is a result, not a crash
                    r = {"error": str(exc).splitlines()[0][:300]}
                row = {"n": n, "msa_rows": args.msa_rows, "precision": precision, "variant": variant_name(precision, chunk),
                       "settings": settings, **r}
                if "seconds" in r:
                    scale = params["blocks"] / args.blocks
                    row["seconds_48_blocks"] = r["seconds"] * scale
                    row["cpu_seconds_48_blocks"] = r.get("cpu_seconds", r["seconds"]) * scale
                rows.append(row)
                print(json.dumps({k: row.get(k) for k in ("n", "variant", "peak_mb", "seconds", "cpu_seconds", "error")}),
                      flush=True)
    summary = compare(rows)
    bytes_per = {"fp32": 4, "bf16": 2, "fp16": 2}
    result = {
        "tool": "xopt.models.openfold.bench", "argv": sys.argv[1:], "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_s": round(time.time() - t_start, 1), "machine": describe(), "config": cfg,
        "what_ran": f"{args.blocks} Evoformer block(s) at real widths, S={args.msa_rows}, fresh process per point; "
                    f"peaks are activation peaks incl. m/z inputs; time scaled x{params['blocks'] / args.blocks:g} to 48 blocks",
        "trunk_weights_mb": {p: round(params["evoformer"] * bytes_per[p] / 2**20, 1) for p in args.precisions},
        "target": {"peak_reduction_min": 4.0, "time_ratio_max": 1.3}, "rows": rows, "summary": summary,
    }
    if args.out:
        from xopt.atomic import write_json

        write_json(args.out, result, force=args.force)
        print(f"wrote {args.out}")
    for s in summary:
        print(f"N={s['n']} {s['variant']}: peak {s['peak_ratio']:.2f}x lower, time {s['time_ratio']:.2f}x "
              f"-> {'meets' if s['meets_target'] else 'misses'} target")
    return 0


def compare(rows: list[dict]) -> list[dict]:
    """Each chunked row against the unchunked row of the same N and precision."""
    base = {(r["n"], r["precision"]): r for r in rows if r["settings"]["chunk_size"] is None and "peak_mb" in r}
    out = []
    for r in rows:
        b = base.get((r["n"], r["precision"]))
        if r["settings"]["chunk_size"] is None or b is None or "peak_mb" not in r:
            continue
        peak_ratio = b["peak_mb"] / r["peak_mb"]
        # CPU time (all threads) is the judged time: steady on a shared host; wall time is kept too
        time_ratio = r.get("cpu_seconds", r["seconds"]) / b.get("cpu_seconds", b["seconds"])
        out.append({"n": r["n"], "precision": r["precision"], "variant": r["variant"],
                    "peak_ratio": round(peak_ratio, 2), "time_ratio": round(time_ratio, 2),
                    "wall_time_ratio": round(r["seconds"] / b["seconds"], 2),
                    "meets_target": peak_ratio >= 4.0 and time_ratio <= 1.3})
    return out


if __name__ == "__main__":
    sys.exit(main())
