"""Command handlers behind the parser in xopt.cli; each calls library functions and prints results."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

from xopt.errors import UserError


def _console():
    from rich.console import Console

    return Console()


def _command_line() -> str:
    return "xopt " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _table(title, head, rows):
    from rich.markup import escape
    from rich.table import Table

    # Cells hold user text such as 'pip install "xopt[cpu]"': never let rich read it as markup.
    t = Table(title=escape(title))
    for h in head:
        t.add_column(escape(h), overflow="fold")
    for r in rows:
        t.add_row(*[escape(str(c)) for c in r])
    return t


def cmd_list(args) -> int:
    from xopt.optimize.base import PASSES, all_passes
    from xopt.registry import MODELS, list_models
    from xopt.runtime.backends.base import BACKENDS, all_backends

    con = _console()
    con.print(_table("models", ["model", "task", "variants", "configs", "graph covers"],
                     [[s.name, s.task, ", ".join(s.variants), ", ".join(s.configs), s.covers] for s in list_models()]))
    rows = []
    for b in all_backends():
        try:
            ok, why = b.probe()
        except Exception as exc:  # a probe must never take `xopt list` down; show why it failed
            ok, why = False, f"probe failed: {exc}"
        rows.append([b.name, "yes" if ok else "no", why, b.description])
    con.print(_table("backends", ["backend", "works here", "why", "description"], rows))
    con.print(_table("optimization passes", ["pass", "description", "options"],
                     [[p.name, p.description, ", ".join(o.name for o in p.options.options)] for p in all_passes()]))
    broken = [[r.kind, name, why] for r in (MODELS, PASSES, BACKENDS) for name, why in r.unavailable().items()]
    if broken:  # a module that failed to import is shown, not silently missing
        con.print(_table("unavailable here", ["kind", "name", "why"], broken))
    return 0


def cmd_profiles(args) -> int:
    from xopt.profiles import DEFAULT_PROFILE, available, load_file

    rows = []
    for name, path in available().items():
        p = load_file(path)
        rows.append([name + (" (default)" if name == DEFAULT_PROFILE else ""), p.kind, f"{p.memory_mb:.0f}",
                     f"{p.budget_mb:.0f}", ", ".join(p.precisions), p.compute_capability or "–", p.description])
    _console().print(_table("device profiles", ["profile", "kind", "memory MB", "budget MB", "precisions", "CC",
                                                "description"], rows))
    return 0


def _tolerances(items) -> dict:
    import dataclasses
    import math

    from xopt.spec import Tolerance

    keys = [f.name for f in dataclasses.fields(Tolerance)]
    out: dict = {}
    for item in items:
        try:
            variant, rest = item.split(":", 1)
            key, value = rest.split("=", 1)
            bound = float(value)
        except ValueError as exc:
            raise UserError(f"bad --tolerance {item!r}",
                            "write it as VARIANT:KEY=VALUE, e.g. int8:mean_abs=0.05") from exc
        # an unknown key would fail inside the gate; NaN would pass every comparison (no gate at all)
        if key not in keys or not variant or not math.isfinite(bound) or bound < 0:
            raise UserError(f"bad --tolerance {item!r}",
                            f"KEY is one of {', '.join(keys)} and VALUE a finite number >= 0, e.g. int8:mean_abs=0.05")
        out.setdefault(variant, {})[key] = bound
    return out


def cmd_export(args) -> int:
    from xopt.cli.flags import pass_options
    from xopt.export.pipeline import export_model
    from xopt.profiles import get_profile
    from xopt.registry import get_model

    spec = get_model(args.model)
    profile = get_profile(args.profile)
    variants = ["fp32"] + (["fp16"] if args.fp16 else []) + (["int8"] if args.int8 else []) + list(args.variant)
    engine_for = []
    if args.engine:
        from xopt.export.engines import engine_variants

        engine_for = engine_variants(spec, args.fp16, args.int8)
        variants += [v for v in engine_for if v not in variants]
    for v in variants:
        spec.variant(v)
    tolerances = _tolerances(args.tolerance)
    unused = sorted(set(tolerances) - set(variants))
    if unused:  # silently ignored, it would look like a gate that was loosened
        raise UserError(f"--tolerance names variant(s) {', '.join(unused)} that this export does not build",
                        f"use one of {', '.join(variants)}")
    overrides = {}
    if args.chunk:
        if spec.fit is None or spec.fit.chunk is None:
            raise UserError(f"model {spec.name} has no chunking", "drop --chunk")
        overrides.update(spec.fit.chunk(args.chunk, profile, args.config, _fit_paths(spec.name)))
    source = None
    if args.from_tf:
        if args.checkpoint:
            raise UserError("--from-tf and --checkpoint both name the weights", "pass only one of them")
        from xopt.export.tf import tf_source

        source = tf_source(args.from_tf, spec, layout=args.tf_layout)
    manifest = export_model(spec.name, variants, out_dir=args.out, checkpoint=args.checkpoint, config=args.config,
                            config_overrides=overrides or None, profile=profile, force=args.force,
                            pass_options=pass_options(args), seed=args.seed,
                            tolerances=tolerances, source=source)
    if args.engine:
        from xopt.export.engines import add_engines

        add_engines(spec, manifest, engine_for, args.engine, profile, force=args.force,
                    options=pass_options(args).get("engine"))
    rows = [[v["name"], v["precision"], v["path"], f"{v['size_bytes'] / 2**20:.1f}",
             f"{v['parity']['max_abs']:.3g}", "pass" if v["parity"]["passed"] else "FAIL",
             ", ".join(f"{e['path']}{' (cache hit)' if e.get('cache_hit') else ''}" for e in v.get("engines", []))]
            for v in manifest.variants]
    _console().print(_table(f"{spec.name} → {manifest.directory} (weights: {manifest.weights.get('kind')})",
                            ["variant", "precision", "file", "MB", "parity max abs", "parity", "engines"], rows))
    return 0


def cmd_profile(args) -> int:
    from xopt.analysis.profiler import profile_model
    from xopt.analysis.report import print_summary, refuse_existing, write_reports

    out = Path(args.out) if args.out else Path("reports") / args.model
    refuse_existing(out, args.force)  # report.md/html too: they may be the user's own files
    variants = [v for v in args.variants.split(",") if v]
    report = profile_model(args.model, variants, artifacts=args.artifacts, backend=args.backend, frames=args.frames,
                           profile_name=args.profile, seed=args.seed, e2e=not args.no_e2e, command=_command_line())
    print_summary(report)
    paths = write_reports(report, out, force=args.force)
    _console().print(f"wrote {paths['json']}, {paths['md'].name}, {paths['html'].name}")
    return 0


def cmd_run(args) -> int:
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
    return 0


def _fit_default_out(model: str) -> Path:
    return Path("reports") / f"{model}-fit"


def _fit_paths(model: str) -> dict:
    """Where a fit finds the export to calibrate against and an earlier fit report to reuse:
    the defaults `xopt export` and `xopt fit` write."""
    from xopt.export.pipeline import default_out_dir

    return {"artifacts": str(default_out_dir(model)), "fit_report": str(_fit_default_out(model) / "report.json")}


def cmd_fit(args) -> int:
    from xopt.profiles import get_profile
    from xopt.registry import get_model
    from xopt.analysis.report import refuse_existing, write_reports

    spec = get_model(args.model)
    if spec.fit is None:
        raise UserError(f"model {spec.name} has no fit-to-budget search", "use xopt profile for its memory")
    out = Path(args.out) if args.out else _fit_default_out(args.model)
    refuse_existing(out, args.force)
    report = spec.fit.search(spec, get_profile(args.profile), spec.config(args.config),
                             {"command": _command_line(), **_fit_paths(spec.name)})
    section = report.get("extra", {}).get("fit", {})
    if section.get("rows"):
        _console().print(_table(f"{spec.name}: fit to {report['profile']['name']}", section["head"], section["rows"]))
    paths = write_reports(report, out, force=args.force)
    _console().print(f"wrote {paths['json']}, {paths['md'].name}, {paths['html'].name}")
    return 0


def cmd_bench(args) -> int:
    from xopt.atomic import write_json
    from xopt.errors import OutputExistsError
    from xopt.analysis.bench import bench_model

    if args.out and Path(args.out).exists() and not args.force:
        raise OutputExistsError(args.out)  # before the benchmark, not after it
    result = bench_model(args.model, [v for v in args.variants.split(",") if v], artifacts=args.artifacts,
                         frames=args.frames, profile_name=args.profile, command=_command_line())
    _console().print(_table(result["title"], result["head"], result["rows"]))
    for line in result["verdicts"]:
        print(line)
    if args.out:
        write_json(args.out, result, force=args.force)
    return 0


def cmd_report(args) -> int:
    from xopt.report_schema import load
    from xopt.analysis.report import comparison, kind_table, print_summary

    reports = [load(p) for p in args.reports]
    if len(reports) == 1 and reports[0]["kind"] == "profile":
        print_summary(reports[0])
        return 0
    if len(reports) == 1:  # a fit or bench report: its own table
        _console().print(_table(*kind_table(reports[0])))
        return 0
    head, rows = comparison(reports, args.reports)
    _console().print(_table("comparison", head, rows))
    return 0
