"""Device profiles: TOML data under profiles/, validated on load."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xopt.errors import UnknownChoiceError, UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_PROFILE = "rtx3060-laptop-12gb"
_PRECISIONS = {"fp32", "fp16", "bf16", "int8"}


def profiles_dir() -> Path:
    import xopt.profiles_data as data

    return Path(data.__path__[0])


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    kind: str  # gpu | cpu
    memory_mb: float
    headroom: float
    precisions: tuple[str, ...]
    compute_capability: str | None = None
    tensorrt_sm: str | None = None
    targets: dict = field(default_factory=dict)
    # the GPU names (as NVML/torch report them) whose timings stand for this profile's device
    gpu_names: tuple[str, ...] = ()
    source: str = ""

    @property
    def budget_mb(self) -> float:
        return self.memory_mb * (1.0 - self.headroom)

    def model_targets(self, model: str) -> dict[str, Any]:
        generic = {k: v for k, v in self.targets.items() if not isinstance(v, dict)}
        specific = self.targets.get(model)
        return {**generic, **(specific if isinstance(specific, dict) else {})}

    def to_json(self) -> dict:
        return {
            "name": self.name, "description": self.description, "kind": self.kind,
            "memory_mb": self.memory_mb, "headroom": self.headroom, "budget_mb": self.budget_mb,
            "precisions": list(self.precisions), "compute_capability": self.compute_capability,
            "tensorrt_sm": self.tensorrt_sm, "gpu_names": list(self.gpu_names), "targets": self.targets,
            "source": self.source,
        }


def _positive(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and 0 < v < float("inf")


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


# Target keys the models read, and what they must hold; other keys pass through untouched.
_TARGET_CHECKS = {
    **{k: _positive for k in ("fps", "real_time_factor", "segment_seconds", "seconds_per_prediction",
                              "track_seconds")},
    **{k: _count for k in ("height", "width", "max_height", "max_width", "max_batch", "batch", "msa_rows",
                           "profile_max_residues")},
    **{k: (lambda v: isinstance(v, list) and len(v) == 3 and all(_count(d) for d in v))
       for k in ("min_shape", "opt_shape", "max_shape")},
    "residues": lambda v: isinstance(v, list) and bool(v) and all(_count(d) for d in v),
}
_TARGET_WHAT = {k: "a positive number" for k in _TARGET_CHECKS}
_TARGET_WHAT.update({k: "a positive integer" for k, ok in _TARGET_CHECKS.items() if ok is _count})
_TARGET_WHAT.update({k: "[batch, height, width], positive integers" for k in ("min_shape", "opt_shape", "max_shape")})
_TARGET_WHAT["residues"] = "a list of positive integers"


def _invalid(src, why) -> UserError:
    return UserError(f"device profile {src} is invalid ({why})", "fix the TOML; see profiles/rtx3060-laptop-12gb.toml")


def parse(data: dict, source: str = "<profile>") -> DeviceProfile:
    if not isinstance(data, dict):
        raise _invalid(source, "not a table")
    dev = data.get("device")
    if not isinstance(dev, dict):
        raise _invalid(source, "[device] table missing")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise _invalid(source, "name missing")
    kind = data.get("kind")
    if kind not in ("gpu", "cpu"):
        raise _invalid(source, "kind must be 'gpu' or 'cpu'")
    mem = dev.get("memory_mb")
    if isinstance(mem, bool) or not isinstance(mem, (int, float)) or not mem > 0:
        raise _invalid(source, "device.memory_mb must be a positive number")
    headroom = dev.get("headroom", 0.1)
    if isinstance(headroom, bool) or not isinstance(headroom, (int, float)) or not 0 <= headroom < 1:
        raise _invalid(source, "device.headroom must be in [0, 1)")
    precisions = dev.get("precisions", ["fp32"])
    if not isinstance(precisions, list) or not precisions or not set(precisions) <= _PRECISIONS:
        raise _invalid(source, f"device.precisions must be a non-empty subset of {sorted(_PRECISIONS)}")
    gpu_names = dev.get("gpu_names", [])
    if not isinstance(gpu_names, list) or not all(isinstance(n, str) and n.strip() for n in gpu_names):
        raise _invalid(source, "device.gpu_names must be a list of GPU names, e.g. [\"NVIDIA GeForce RTX 3060\"]")
    targets = data.get("targets", {})
    if not isinstance(targets, dict):
        raise _invalid(source, "[targets] must be a table")
    tables = [("targets", targets)] + [(f"targets.{k}", v) for k, v in targets.items() if isinstance(v, dict)]
    for table, values in tables:
        for key, ok in _TARGET_CHECKS.items():
            if key in values and not ok(values[key]):
                raise _invalid(source, f"{table}.{key} must be {_TARGET_WHAT[key]}")
    return DeviceProfile(
        name=name, description=str(data.get("description", "")), kind=kind, memory_mb=float(mem),
        headroom=float(headroom), precisions=tuple(precisions),
        compute_capability=dev.get("compute_capability"), tensorrt_sm=dev.get("tensorrt_sm"),
        targets=targets, source=source, gpu_names=tuple(gpu_names),
    )


def load_file(path: str | Path) -> DeviceProfile:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read device profile {path} ({exc})", "pass a readable TOML file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise _invalid(path, f"TOML: {exc}") from exc
    return parse(data, _source_name(path))


def _source_name(path: Path) -> str:
    """How reports name a profile's file: a shipped one by its place in xopt ("xopt:profiles/NAME.toml",
    not where this machine installed it); a user's file as it was given."""
    try:
        return f"xopt:profiles/{path.resolve().relative_to(profiles_dir().resolve()).as_posix()}"
    except ValueError:
        return str(path)


def available() -> dict[str, Path]:
    return {p.stem: p for p in sorted(profiles_dir().glob("*.toml"))}


def get_profile(name_or_path: str | None = None) -> DeviceProfile:
    """A profile by name (shipped) or by path to a TOML file."""
    name_or_path = name_or_path or DEFAULT_PROFILE
    if name_or_path.startswith("xopt:profiles/"):  # a shipped profile as a report names it
        return load_file(profiles_dir() / name_or_path[len("xopt:profiles/"):])
    if name_or_path.endswith(".toml") or "/" in name_or_path:
        return load_file(name_or_path)
    shipped = available()
    if name_or_path not in shipped:
        raise UnknownChoiceError("device profile", name_or_path, shipped)
    return load_file(shipped[name_or_path])
