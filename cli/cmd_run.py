"""`xopt run`: a built artifact on a file."""
from __future__ import annotations

from pathlib import Path

from xopt.errors import UserError

NAME = "run"
ORDER = 5
HELP = "run a built artifact on a file (image, video, audio track, FASTA)"


def add_arguments(p, argv: list[str]) -> None:
    p.add_argument("model")
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--artifacts", default=None, help="export directory (default artifacts/MODEL)")
    p.add_argument("--variant", default="fp32")
    p.add_argument("--backend", default="ort-cpu")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")


def run(args) -> int:
    from xopt.export.pipeline import default_out_dir
    from xopt.manifest import MANIFEST_NAME
    from xopt.manifest import load as load_manifest
    from xopt.progress import track
    from xopt.registry import get_model
    from xopt.runtime import load_pipeline

    spec = get_model(args.model)  # an unknown model is named as such, not as a missing export
    art = Path(args.artifacts or default_out_dir(args.model))
    if (art / MANIFEST_NAME).is_file() and load_manifest(art).model != spec.name:
        raise UserError(f"{art} holds a {load_manifest(art).model} export, not {spec.name}",
                        f"pass --artifacts of a {spec.name} export")
    src = Path(args.input)
    if not src.exists():
        raise UserError(f"{src} does not exist", "pass an existing input file")
    if src.is_dir():
        raise UserError(f"{src} is a directory", "pass a file")
    if Path(args.output).resolve() == src.resolve():
        raise UserError(f"the output {args.output} is the input file", "choose another -o/--output (even --force "
                        "never overwrites the input)")
    pipe = load_pipeline(art, backend=args.backend, variant=args.variant)
    try:
        written = pipe.process_file(src, Path(args.output), force=args.force,
                                    progress=lambda it, total=None: track(it, f"{args.model}", total))
    finally:
        pipe.close()
    for p in written:
        print(p)
    import sys

    from xopt.analysis.eval_runner import run_warnings  # label-free checks of what was written

    for line in run_warnings(spec, src, written, pipe.config.get("weights")):
        print(f"xopt: warning: {line}", file=sys.stderr)
    return 0
