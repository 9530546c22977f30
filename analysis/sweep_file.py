"""SWEEP.toml: the jobs of a sweep, validated before anything runs, and the points they expand to.

    [sweep]                     # optional defaults for every job
    frames = 10
    [[job]]
    model = "modnet"
    variants = ["fp32", "fp16", "int8"]
    backend = "ort-cpu"         # or backends = [...]
    profile = "rtx3060-laptop-12gb"   # or profiles = [...]
    shapes = [{ height = 256, width = 256 }, { height = 512, width = 512 }]
    frames = 10

Each (model, variant, backend, profile, shape) is one point. Exports are per recipe (model,
config, seed, checkpoint or artifacts directory) and shared by every point that needs them.
"""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from xopt.errors import UserError, did_you_mean

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SETTINGS = {"frames": 10, "warmup": 1, "threads": None, "seed": 0, "e2e": True}
_JOB_KEYS = {"model", "variants", "variant", "backend", "backends", "profile", "profiles", "shapes", "config",
             "config_overrides", "checkpoint", "artifacts", *SETTINGS}
_TOP_KEYS = {"job", "sweep"}


@dataclass(frozen=True)
class Recipe:
    """What one export is made from; points of the same recipe share its artifacts."""
    model: str
    config: str | None
    config_overrides: tuple = ()
    seed: int = 0
    checkpoint: str | None = None
    artifacts: str | None = None  # an existing export directory to use (and complete) instead of a cache

    @property
    def key(self) -> str:
        return _digest([self.model, self.config, list(self.config_overrides), self.seed, self.checkpoint,
                        self.artifacts])

    def label(self) -> str:
        return f"{self.model}" + (f" ({self.config})" if self.config else "") + (f" seed {self.seed}" if self.seed else "")


@dataclass(frozen=True)
class Point:
    job: int
    recipe: Recipe
    variant: str
    backend: str
    profile: str
    shape: tuple  # sorted (target, value) pairs: the device profile's model targets this point overrides
    settings: tuple  # sorted (name, value) pairs of SETTINGS
    label_of_shape: str = ""  # the shape as the sweep file wrote it (flag names)

    @property
    def model(self) -> str:
        return self.recipe.model

    def shape_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.shape}

    def settings_dict(self) -> dict:
        return dict(self.settings)

    def shape_text(self) -> str:
        return self.label_of_shape or shape_text(self.shape_dict())

    def label(self) -> str:
        return f"{self.model} {self.variant} on {self.backend} [{self.shape_text()}] vs {self.profile}"


@dataclass
class Sweep:
    path: Path
    points: list[Point] = field(default_factory=list)
    recipes: dict[str, tuple[Recipe, list[str]]] = field(default_factory=dict)  # key -> (recipe, variants)
    jobs: int = 0


def shape_text(shape: dict) -> str:
    return ", ".join(f"{k}={'x'.join(map(str, v)) if isinstance(v, list) else v}" for k, v in sorted(shape.items())) \
        or "profile default"


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _bad(path, where: str, why: str, fix: str) -> UserError:
    return UserError(f"{path}: {where}: {why}", fix)


def _names(value, key: str, path, where: str) -> list[str]:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise _bad(path, where, f"'{key}' must be a name or a non-empty list of names", f"e.g. {key} = [\"fp32\"]")
    return list(dict.fromkeys(names))


def _one_of(job: dict, single: str, plural: str, default, path, where: str) -> list[str]:
    if single in job and plural in job:
        raise _bad(path, where, f"both '{single}' and '{plural}' are set", "keep one of them")
    if plural in job:
        return _names(job[plural], plural, path, where)
    if single in job:
        return _names(job[single], single, path, where)
    return [default] if default else []


def _shape(spec, raw, path, where: str) -> tuple:
    """A shape table -> sorted (target, value); keys are the model's shape flags (`xopt profile
    MODEL --help`: height, width, batch, segment, residues, msa-rows) or their profile targets."""
    if not isinstance(raw, dict) or not raw:
        raise _bad(path, where, "each entry of 'shapes' must be a non-empty table", "e.g. { height = 256, width = 256 }")
    flags = {f.flag: f for f in spec.shape_flags} | {f.target: f for f in spec.shape_flags}
    out = {}
    for key, value in raw.items():
        f = flags.get(key)
        if f is None:
            hint = did_you_mean(key, flags)
            raise _bad(path, where, f"'{key}' is not an input size of {spec.name}" +
                       (f" (did you mean '{hint}'?)" if hint else ""),
                       f"use one of: {', '.join(sorted(x.flag for x in spec.shape_flags)) or 'none (no shape keys)'}")
        values = value if isinstance(value, list) and f.as_list else [value]
        ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 and
                 (f.type is not int or float(v).is_integer()) for v in values) and values
        if not ok:
            raise _bad(path, where, f"{key} = {value!r} is not a positive {f.type.__name__}", f"fix {key}")
        values = [f.type(v) for v in values]
        out[f.target] = tuple(values) if f.as_list else values[0]
    return tuple(sorted(out.items()))


def _settings(defaults: dict, job: dict, path, where: str) -> tuple:
    merged = {**SETTINGS, **defaults, **{k: job[k] for k in SETTINGS if k in job}}
    for key in ("frames", "warmup", "seed"):
        v = merged[key]
        low = 1 if key == "frames" else 0
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise _bad(path, where, f"{key} = {v!r} must be an integer >= {low}", f"fix {key}")
    t = merged["threads"]
    if t is not None and (isinstance(t, bool) or not isinstance(t, int) or t < 1):
        raise _bad(path, where, f"threads = {t!r} must be an integer >= 1", "fix threads (or leave it out)")
    if not isinstance(merged["e2e"], bool):
        raise _bad(path, where, "e2e must be true or false", "fix e2e")
    return tuple(sorted(merged.items()))


def _recipe(spec, job: dict, base: Path, seed: int, path, where: str) -> Recipe:
    config = job.get("config")
    overrides = job.get("config_overrides", {})
    if config is not None and not isinstance(config, str) or not isinstance(overrides, dict):
        raise _bad(path, where, "config must be a preset name and config_overrides a table", "fix config")
    spec.config(config, overrides)  # an unknown preset: its own message with the choices
    paths = {}
    for key in ("checkpoint", "artifacts"):
        if job.get(key) is not None:
            if not isinstance(job[key], str):
                raise _bad(path, where, f"{key} must be a path", f"fix {key}")
            p = (base / job[key]).resolve()
            if key == "checkpoint" and not p.is_file():
                raise _bad(path, where, f"checkpoint {p} does not exist", "fix the path (relative to the sweep file)")
            paths[key] = str(p)
    return Recipe(spec.name, config, tuple(sorted(overrides.items())), seed, paths.get("checkpoint"),
                  paths.get("artifacts"))


def load(path: str | Path) -> Sweep:
    """Read and validate SWEEP.toml: every name resolved, every value checked, before any work."""
    from xopt.profiles import get_profile
    from xopt.registry import get_model
    from xopt.runtime.backends.base import get_backend

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path} does not exist", "pass the sweep file (TOML, see docs/commands/sweep.md)")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path} ({exc})", "pass a readable TOML file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path} is not valid TOML ({exc})", "fix the syntax at that line") from exc
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise _bad(path, "top level", f"unknown key(s) {', '.join(sorted(unknown))}", "use [sweep] and [[job]] tables")
    defaults = data.get("sweep", {})
    if not isinstance(defaults, dict) or set(defaults) - set(SETTINGS):
        raise _bad(path, "[sweep]", f"only {', '.join(SETTINGS)} may be set here", "move other keys into a [[job]]")
    jobs = data.get("job")
    if not isinstance(jobs, list) or not jobs:
        raise _bad(path, "top level", "no [[job]] tables", "add at least one [[job]] with a model and its variants")
    sweep = Sweep(path, jobs=len(jobs))
    seen = set()
    for i, job in enumerate(jobs, 1):
        where = f"job {i}"
        if not isinstance(job, dict):
            raise _bad(path, where, "not a table", "write it as [[job]]")
        extra = set(job) - _JOB_KEYS
        if extra:
            key = sorted(extra)[0]
            hint = did_you_mean(key, _JOB_KEYS)
            raise _bad(path, where, f"unknown key '{key}'" + (f" (did you mean '{hint}'?)" if hint else ""),
                       f"use: {', '.join(sorted(_JOB_KEYS))}")
        if not isinstance(job.get("model"), str):
            raise _bad(path, where, "'model' is missing", "add model = \"modnet\" (see xopt list)")
        spec = get_model(job["model"])
        where = f"job {i} ({spec.name})"
        variants = _one_of(job, "variant", "variants", None, path, where)
        if not variants:
            raise _bad(path, where, "no variants", f"add variants = [...] (one of {', '.join(spec.variants)})")
        for v in variants:
            spec.variant(v)
        backends = _one_of(job, "backend", "backends", "ort-cpu", path, where)
        for b in backends:
            get_backend(b)
        if "torch" in backends and any(v != "fp32" for v in variants):
            raise _bad(path, where, "the torch backend runs the FP32 PyTorch model only", "give torch its own job")
        profiles = _one_of(job, "profile", "profiles", "rtx3060-laptop-12gb", path, where)
        for p in profiles:
            get_profile(p)
        raw_shapes = job.get("shapes", [{}])
        if not isinstance(raw_shapes, list) or not raw_shapes:
            raise _bad(path, where, "'shapes' must be a non-empty list of tables", "e.g. shapes = [{ height = 256 }]")
        shapes = [() if s == {} else _shape(spec, s, path, where) for s in raw_shapes]
        flag_of = {f.target: f.flag for f in spec.shape_flags}
        labels = {sh: shape_text({flag_of.get(k, k): list(v) if isinstance(v, tuple) else v for k, v in sh})
                  for sh in shapes}
        settings = _settings(defaults, job, path, where)
        recipe = _recipe(spec, job, path.parent, dict(settings)["seed"], path, where)
        got = sweep.recipes.setdefault(recipe.key, (recipe, []))[1]
        reference = ["fp32"] if "fp32" in spec.variants else []  # the FP32 reference is every point's baseline
        got[:] = list(dict.fromkeys([*got, *reference, *variants]))
        for v in variants:
            for b in backends:
                for prof in profiles:
                    for shape in shapes:
                        point = Point(i, recipe, v, b, prof, shape, settings, labels[shape])
                        ident = (recipe.key, v, b, prof, shape, settings)
                        if ident not in seen:  # the same point listed twice is measured once
                            seen.add(ident)
                            sweep.points.append(point)
    return sweep
