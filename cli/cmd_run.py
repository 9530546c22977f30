"""`xopt run`: a built artifact on a file."""
from __future__ import annotations

import sys
from pathlib import Path

from xopt.errors import OutputExistsError, UserError

NAME = "run"
ORDER = 5
HELP = "run a built artifact on a file (image, video, audio track, FASTA)"


EXIT_CHECK_FAILED = 3
EPILOG = ("exit status: 0 done; 1 an error, before anything was written; 3 finished, but something failed a "
          "check (an input that ends early, e.g. a cut-off video: what it held was processed; with many files: "
          "a file that failed)")


def add_arguments(p, argv: list[str]) -> None:
    p.epilog = EPILOG
    p.add_argument("model")
    p.add_argument("input", help="a file, or many: a directory or a quoted glob ('frames/*.png')")
    p.add_argument("-o", "--output", default=None,
                   help="where to write (default outputs/MODEL/: a matte as NAME.png, a video's as NAME.mp4, stems in "
                        "NAME/, a structure as NAME.pdb; with many files, that folder)")
    p.add_argument("--artifacts", default=None, help="export directory (default artifacts/MODEL)")
    p.add_argument("--variant", default="fp32")
    p.add_argument("--backend", default="ort-cpu")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    g = p.add_argument_group("many files (a directory or glob: -o is a directory; exit 3 when some failed)")
    g.add_argument("--ray", action="store_true", help="stream the files through Ray Data actors (one session each)")
    g.add_argument("--address", default=None, help="with --ray: join this cluster (default: embedded, 127.0.0.1)")
    g.add_argument("--workers", type=int, default=None, help="with --ray: actors (default: one per CPU or GPU)")
    g.add_argument("--threads", type=int, default=None, help="intra-op threads per session (--ray default 1)")


def run(args) -> int:
    from xopt.analysis.quiet import announce, run_log, writable_folder
    from xopt.atomic import check_writable
    from xopt.cli.common import command_line, ran_line
    from xopt.export.pipeline import default_out_dir
    from xopt.manifest import MANIFEST_NAME
    from xopt.manifest import load as load_manifest
    from xopt.progress import track
    from xopt.registry import get_model
    from xopt.runtime import load_pipeline
    from xopt.runtime.pipeline import check_input, run_file

    spec = get_model(args.model)  # an unknown model is named as such, not as a missing export
    spec.variant(args.variant)  # so is an unknown variant, whatever the export holds
    art = Path(args.artifacts or default_out_dir(args.model))
    if (art / MANIFEST_NAME).is_file() and load_manifest(art).model != spec.name:
        raise UserError(f"{art} holds a {load_manifest(art).model} export, not {spec.name}",
                        f"pass --artifacts of a {spec.name} export")
    src = Path(args.input)
    if args.output is None:  # the model's pipeline names its outputs under outputs/MODEL
        args.output = str(_default_output(spec, src, args))
    if args.ray or src.is_dir() or (not src.exists() and set("*?[") & set(args.input)):
        from xopt.cli.run_batch import run_many

        return run_many(args, spec, art)
    if Path(args.output).resolve() == src.resolve():
        raise UserError(f"the output {args.output} is the input file", "choose another -o/--output (even --force "
                        "never overwrites the input)")
    # before any export or session: the input is there, readable and of a kind the model takes
    # (its pipeline reads the header), and the output can be written
    facts = check_input(spec, src)
    check_writable(args.output, "-o/--output")
    said = list(dict.fromkeys(facts.get("notes") or ()))
    for text in said:  # e.g. a 5.1 track that will be downmixed
        print(f"xopt: note: {text}", file=sys.stderr)
    with run_log(writable_folder(art), "run", command_line(), flag="--artifacts") as log:
        # like xopt profile: build what is missing (and say so) rather than fail on a fresh checkout;
        # a file passed as --artifacts, or a variant the model does not have, gets its own message below
        missing = not art.exists() or (art.is_dir() and not (art / MANIFEST_NAME).is_file())
        if missing or (art.is_dir() and args.variant in spec.variants and not load_manifest(art).has(args.variant)):
            from xopt.cli.common import export_missing

            export_missing(spec, args.variant, art)
        pipe = load_pipeline(art, backend=args.backend, variant=args.variant)
        try:
            written = run_file(pipe, src, Path(args.output), force=args.force,  # replaces only its own outputs
                               progress=lambda it, total=None: track(it, f"{args.model} {args.variant} on {src.name}",
                                                                     total, pipe.progress_unit))
        except OutputExistsError as exc:  # name the flag this command has
            raise OutputExistsError(exc.path, "-o/--output") from None
        finally:
            pipe.close()
        from xopt.analysis.eval_runner import run_warnings  # label-free checks of what was written

        warnings = run_warnings(spec, src, written, pipe.config.get("weights"))
    for p in written:
        print(p)
    print(ran_line(spec.name, args.variant, args.backend, art, pipe.config.get("weights")), file=sys.stderr)
    for n in pipe.notes:  # what the pipeline found while reading (said here unless said above)
        if n["failed"] or n["text"] not in said:
            print(f"xopt: {'warning' if n['failed'] else 'note'}: {n['text']}", file=sys.stderr)
    for line in warnings:
        print(f"xopt: warning: {line}", file=sys.stderr)
    announce(log)
    return EXIT_CHECK_FAILED if any(n["failed"] for n in pipe.notes) else 0


def _default_output(spec, src: Path, args) -> Path:
    from xopt.runtime.pipeline import pipeline_class

    root = Path("outputs") / spec.name
    many = args.ray or src.is_dir() or (not src.exists() and set("*?[") & set(args.input))
    cls = pipeline_class(spec)
    if many or cls is None or not src.is_file():  # a missing file is named as such by check_input
        return root
    return cls.default_output(src, root)
