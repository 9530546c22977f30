"""The `xopt` command line. Commands parse arguments and call library functions; nothing
heavy is imported before a command runs, so `xopt --help` works without the extras.
"""
from __future__ import annotations

import argparse
import sys
import warnings

from xopt import __version__
from xopt.errors import UserError

def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    from xopt.cli.flags import add_pass_options, model_in

    parser = argparse.ArgumentParser(prog="xopt", description="Export, optimize, run and profile models for edge GPUs.",
                                     epilog="Headline: xopt export modnet --fp16 && xopt profile modnet")
    parser.add_argument("--version", action="version", version=f"xopt {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    sub.add_parser("list", help="models, variants, backends (and whether each works here), passes")
    sub.add_parser("profiles", help="device profiles")

    p = sub.add_parser("export", help="export the FP32 ONNX baseline and optimized variants")
    p.add_argument("model")
    p.add_argument("--fp16", action="store_true", help="add the FP16 variant (FP32 islands from the spec)")
    p.add_argument("--int8", action="store_true", help="add the INT8 variant")
    p.add_argument("--variant", action="append", default=[], metavar="NAME", help="add a named variant (repeatable)")
    p.add_argument("--profile", default=None, help="device profile name or TOML path (default rtx3060-laptop-12gb)")
    p.add_argument("--checkpoint", default=None, help="upstream-format checkpoint (default: seeded random weights)")
    p.add_argument("--config", default=None, help="model configuration preset (see xopt list)")
    p.add_argument("--seed", type=int, default=0, help="seed for random weights and sample data")
    p.add_argument("--out", default=None, help="output directory (default artifacts/MODEL)")
    p.add_argument("--force", action="store_true", help="overwrite existing artifacts")
    p.add_argument("--engine", choices=("trt", "trt-rtx"), default=None,
                   help="also build a TensorRT engine for each requested precision")
    p.add_argument("--from-tf", default=None, metavar="PATH", help="convert a TensorFlow SavedModel/.keras instead")
    p.add_argument("--tf-layout", default="auto", choices=("auto", "NHWC", "NCHW"),
                   help="layout of the TensorFlow model's image input (auto: from its signature)")
    p.add_argument("--chunk", default=None, help="chunking for models that have it: auto or a size")
    p.add_argument("--tolerance", action="append", default=[], metavar="VARIANT:KEY=VALUE",
                   help="override a parity bound, e.g. int8:mean_abs=0.05")
    add_pass_options(p, model_in(list(sys.argv[1:] if argv is None else argv), "export"))

    p = sub.add_parser("profile", help="compare variants with the FP32 baseline and write report.json/md/html")
    p.add_argument("model")
    p.add_argument("--variants", default="fp32,fp16,int8", help="comma-separated variants")
    p.add_argument("--artifacts", default=None, help="export directory (default artifacts/MODEL); missing variants are exported")
    p.add_argument("--backend", default="ort-cpu", help="runtime backend (see xopt list)")
    p.add_argument("--frames", type=int, default=20, help="timed frames per variant after warm-up")
    p.add_argument("--profile", default=None, help="device profile (default rtx3060-laptop-12gb)")
    p.add_argument("--out", default=None, help="report directory (default reports/MODEL)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-e2e", action="store_true", help="skip end-to-end (pre/post-processing) timing")
    p.add_argument("--force", action="store_true", help="overwrite an existing report")

    p = sub.add_parser("run", help="run a built artifact on a file (image, video, audio track, FASTA)")
    p.add_argument("model")
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--artifacts", default=None, help="export directory (default artifacts/MODEL)")
    p.add_argument("--variant", default="fp32")
    p.add_argument("--backend", default="ort-cpu")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")

    p = sub.add_parser("fit", help="largest input that fits the device profile, per variant")
    p.add_argument("model")
    p.add_argument("--profile", default=None)
    p.add_argument("--config", default=None)
    p.add_argument("--out", default=None, help="report directory (default reports/MODEL-fit)")
    p.add_argument("--force", action="store_true")

    p = sub.add_parser("bench", help="latency ratios in one run: torch eager vs ORT FP32 vs variants, with drift")
    p.add_argument("model")
    p.add_argument("--variants", default="fp32,int8")
    p.add_argument("--artifacts", default=None)
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--profile", default=None)
    p.add_argument("--out", default=None, help="write the bench JSON here")
    p.add_argument("--force", action="store_true")

    p = sub.add_parser("report", help="print a report, or compare several report.json files")
    p.add_argument("reports", nargs="+")
    return parser


def main(argv=None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    from xopt import progress
    from xopt.cli import commands
    from xopt.extras import ort_conflict

    progress.set_quiet(args.quiet)
    conflict = ort_conflict()
    if conflict:
        warnings.warn(conflict, RuntimeWarning, stacklevel=1)
    try:
        return getattr(commands, "cmd_" + args.command)(args) or 0
    except UserError as exc:
        print(f"xopt: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("xopt: interrupted; nothing half-written was kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
