"""`xopt export`: the FP32 ONNX baseline and optimized variants."""
from __future__ import annotations

from pathlib import Path

from xopt.errors import UserError
from xopt.cli.cmd_fit import fit_paths
from xopt.cli.common import console, print_table

NAME = "export"
ORDER = 3
HELP = "export the FP32 ONNX baseline and optimized variants"


def add_arguments(p, argv: list[str]) -> None:
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
    p.add_argument("--max-drop", type=float, default=None, metavar="X",
                   help="gated variants (int8-gated, fp16-gated): the largest drop in the gate's drift term, in its "
                        "own units (matte MAE, dB of SDR, Å), instead of 3x the noise floor")
    p.add_argument("--tolerance", action="append", default=[], metavar="VARIANT:KEY=VALUE",
                   help="override a parity bound, e.g. int8:mean_abs=0.05")
    from xopt.cli.flags import add_pass_options, model_in

    add_pass_options(p, model_in(argv, "export"))


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


def run(args) -> int:
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
    from xopt.atomic import check_writable  # before a fit (--chunk), a conversion or a build
    from xopt.export.pipeline import default_out_dir

    check_writable(args.out or default_out_dir(spec.name))
    if args.checkpoint and not Path(args.checkpoint).exists():  # what else is wrong with it, the model says
        raise UserError(f"checkpoint {args.checkpoint} does not exist", "pass the path of a checkpoint file")
    overrides = {}
    if args.chunk and (spec.fit is None or spec.fit.chunk is None):
        raise UserError(f"model {spec.name} has no chunking", "drop --chunk")
    if args.from_tf and args.checkpoint:
        raise UserError("--from-tf and --checkpoint both name the weights", "pass only one of them")
    from xopt.analysis.quiet import announce, run_log
    from xopt.cli.common import command_line
    from xopt.export.pipeline import default_out_dir

    options = pass_options(args)
    if args.max_drop is not None:
        if not args.max_drop >= 0:
            raise UserError(f"--max-drop must be a number >= 0, got {args.max_drop}", "e.g. --max-drop 0.01")
        gated = {p for v in variants for p, _ in spec.variant(v).passes if p.endswith("-gated")}
        if not gated:
            raise UserError("--max-drop applies to gated variants, and none of the requested ones is gated",
                            "drop --max-drop, or add a gated variant (e.g. --int8)")
        for p in gated:
            options.setdefault(p, {})["max_drop"] = args.max_drop
    with run_log(args.out or default_out_dir(spec.name), "export", command_line()) as log:
        if args.chunk:  # --chunk auto measures in child processes: their output belongs in the log
            overrides.update(spec.fit.chunk(args.chunk, profile, args.config, fit_paths(spec.name)))
        source = None
        if args.from_tf:  # TensorFlow's import prints to file descriptor 2: inside the log
            from xopt import progress
            from xopt.export.tf import tf_source

            with progress.step(f"{spec.name}: TensorFlow model {args.from_tf} -> ONNX (tf2onnx)"):
                source = tf_source(args.from_tf, spec, layout=args.tf_layout)
        manifest = export_model(spec.name, variants, out_dir=args.out, checkpoint=args.checkpoint,
                                config=args.config, config_overrides=overrides or None, profile=profile,
                                force=args.force, pass_options=options, seed=args.seed,
                                tolerances=tolerances, source=source)
        if args.engine:
            from xopt.export.engines import add_engines

            add_engines(spec, manifest, [v for v in engine_for if manifest.has(v)], args.engine, profile,
                        force=args.force,
                        options=pass_options(args).get("engine"))
    from xopt.export.export_dir import failed_in

    requested = [v for v in variants if not manifest.has(v)]
    rows = [[v["name"], v["precision"], v["path"], f"{v['size_bytes'] / 2**20:.1f}",
             f"{v['parity']['max_abs']:.3g}",
             ("pass (its gate)" if v["parity"].get("acceptance") else "pass") if v["parity"]["passed"] else "FAIL",
             ", ".join(f"{e['path']}{' (cache hit)' if e.get('cache_hit') else ''}" for e in v.get("engines", []))]
            for v in manifest.variants]
    rows += [[f["name"], f["precision"], "not written", "", "", f"FAILED ({f['stage']})", ""]
             for f in failed_in(manifest, requested)]
    print_table(f"{spec.name} → {manifest.directory} (weights: {manifest.weights.get('kind')})",
                ["variant", "precision", "file", "MB", "parity max abs", "parity", "engines"], rows)
    for line in gate_lines([v for v in manifest.variants if v["name"] in variants]):
        console().print(line, markup=False)
    choice = (manifest.config or {}).get("chunk_choice")
    if choice:
        console().print(f"chunking: {choice}", markup=False)
    failures = failed_in(manifest, requested)
    for f in failures:
        console().print(f"{f['name']}: FAILED its {f['stage']} check, not written: {f['error']}", markup=False)
    if failures:
        kept = ", ".join(v["name"] for v in manifest.variants if v["name"] in variants)
        console().print(f"kept {kept} in {manifest.directory}; exit {EXIT_SOME_FAILED}: "
                        f"{len(failures)} variant(s) failed", markup=False)
    announce(log)
    if failures:
        return EXIT_SOME_FAILED
    return 0


EXIT_SOME_FAILED = 3  # finished, wrote what passed; some variant failed its gate (README: exit status)


def gate_lines(entries) -> list[str]:
    """What each gated pass kept in higher precision, and the gate's result."""
    from xopt.optimize.precision_search import speed_text

    out = []
    for v in entries:
        for p in v.get("passes", []):
            facts = p.get("facts") or {}
            gate = facts.get("gate")
            if not gate:
                continue
            speed = speed_text(gate.get("speed"))
            cal = facts.get("calibration")
            cal_text = f"; calibration {cal['method']}, per-channel {cal['per_channel']}" if cal else ""
            state = "gate passed" if gate.get("applied", True) else "gate"
            out.append(f"{v['name']}: {state}: {gate['text']}" + (f"; {speed}" if speed else "") + cal_text)
            if not gate.get("applied", True):
                continue
            kept = facts.get("fp32_groups") or []
            if kept:
                out.append(f"  kept in FP32 ({len(kept)} of {facts.get('groups')} groups): "
                           + "; ".join(f"{k['group']} ({k['why']})" if k.get("why") else k["group"] for k in kept))
            else:
                out.append(f"  kept in FP32: none of {facts.get('groups')} groups")
    return out
