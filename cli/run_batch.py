"""`xopt run MODEL DIR_OR_GLOB -o OUT [--ray]`: many files, in this process or on Ray (cmd_run
hands over here); exit 0 when every file succeeded, 3 when some failed."""
from __future__ import annotations

import sys
from pathlib import Path

from xopt.errors import UserError


def run_many(args, spec, art: Path) -> int:
    from xopt.manifest import MANIFEST_NAME
    from xopt.manifest import load as load_manifest
    from xopt.runtime.batch import collect_inputs, run_batch

    if not args.ray and (args.address or args.workers):
        raise UserError("--address and --workers are for Ray", "add --ray")
    inputs = collect_inputs(args.input)  # before any export or output: a bad path is its own message
    spec.variant(args.variant)
    if art.is_file():
        raise UserError(f"--artifacts {art} is a file", "pass the directory xopt export wrote")
    _check_inputs(spec, inputs)
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file, and many inputs need a directory", "pass a directory to -o/--output")
    from xopt.atomic import check_writable

    check_writable(out, "-o/--output")
    if args.ray:
        from xopt.runtime import ray_env

        ray_env.require_ray("for xopt run --ray")
    from xopt.analysis.quiet import announce, run_log
    from xopt.cli.common import command_line

    with run_log(out, "run", command_line(), flag="-o/--output") as log:  # Ray's and the libraries' own chatter
        if not (art / MANIFEST_NAME).is_file() or not load_manifest(art).has(args.variant):
            from xopt.cli.common import export_missing  # like a single file: build what is missing

            export_missing(spec, args.variant, art)
        result = run_batch(art, inputs, out, variant=args.variant, backend=args.backend, force=args.force,
                           use_ray=args.ray, address=args.address, workers=args.workers, threads=args.threads)
    for path in result.outputs:
        print(Path(args.output) / path)
    for item in result.done:  # what the pipeline had to say (a downmix; a file that ends early)
        for n in item.get("notes") or ():
            print(f"xopt: {'warning' if n['failed'] else 'note'}: {n['text']}", file=sys.stderr)
    for item in result.failed:
        print(f"xopt: failed: {item['input']}: {item['error']}", file=sys.stderr)
    ok = len(result.done) + result.skipped
    short = f" ({len(result.incomplete)} of them failed a check)" if result.incomplete else ""
    print(f"xopt: {ok} of {result.total} file(s) done{short} ({result.skipped} unchanged from an earlier run), "
          f"{len(result.failed)} failed, {result.wall_s:.1f} s on {result.where}; record: {result.record}",
          file=sys.stderr)
    announce(log)
    return result.exit_code


def _check_inputs(spec, inputs: list[Path]) -> None:
    """Each input's header, before any export: when none can be run, say why (the first
    reasons); otherwise the ones that cannot fail alone in the batch, with the same message."""
    from xopt.runtime.pipeline import check_input

    bad = []
    for p in inputs:
        try:
            check_input(spec, p)
        except UserError as exc:
            bad.append(exc)
    if bad and len(bad) == len(inputs):
        if len(bad) == 1:
            raise bad[0]
        raise UserError(f"none of the {len(inputs)} inputs can be run by {spec.name} ({bad[0].problem}; "
                        f"and {len(bad) - 1} more)", bad[0].fix)
