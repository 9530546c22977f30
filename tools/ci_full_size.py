"""CI's full-size check: export the real htdemucs (42 M parameters, 7.8 s segments) and profile
FP32, FP16 and INT8 through the CLI as a user would, then fail unless every variant completed in a
process of its own under the per-variant memory limit. The test suite profiles tiny configs only;
this keeps the full-size path from breaking unseen (it once died at 24 GB).

    python3 tools/ci_full_size.py [--workdir DIR] [--max-mb 8192] [--frames 3]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--workdir", default=None, help="where artifacts and the report go (default: a temp dir)")
    ap.add_argument("--max-mb", type=float, default=8192.0, help="peak memory allowed per variant process")
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--variants", default="fp32,fp16,int8")
    args = ap.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="xopt-full-size-"))
    art, rep = work / "artifacts", work / "report"
    steps = [["export", "demucs", "--fp16", "--int8", "--out", str(art)],
             ["profile", "demucs", "--variants", args.variants, "--artifacts", str(art), "--out", str(rep),
              "--frames", str(args.frames), "--no-e2e"]]
    for step in steps:
        t0 = time.perf_counter()
        print("+ xopt " + " ".join(step), flush=True)
        rc = subprocess.run([sys.executable, "-m", "xopt.cli", *step]).returncode
        print(f"  exit {rc} after {time.perf_counter() - t0:.0f} s", flush=True)
        if rc != 0:
            return rc
    report = json.loads((rep / "report.json").read_text(encoding="utf-8"))
    bad = []
    for r in report["results"]:
        peak = (r.get("memory") or {}).get("peak_mb")
        isolated = (r.get("process") or {}).get("isolated")
        print(f"  {r['variant']}: peak {peak} MB ({(r.get('memory') or {}).get('kind')}), "
              f"error {r.get('error')!r}, own process {bool(isolated)}")
        if r.get("error") and not r.get("drift"):
            bad.append(f"{r['variant']} did not run: {r['error']}")
        elif peak is None or peak > args.max_mb:
            bad.append(f"{r['variant']} peaked at {peak} MB, over {args.max_mb:.0f} MB")
        elif not isolated:
            bad.append(f"{r['variant']} was not measured in a process of its own")
    for line in bad:
        print(f"FAILED: {line}", file=sys.stderr)
    print("full-size htdemucs: " + ("FAILED" if bad else f"every variant under {args.max_mb:.0f} MB"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
