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
    source: str = ""

    @property
    def budget_mb(self) -> float:
        return self.memory_mb * (1.0 - self.headroom)

    def model_targets(self, model: str) -> dict[str, Any]:
        generic = {k: v for k, v in self.targets.items() if not isinstance(v, dict)}
        return {**generic, **self.targets.get(model, {})}

    def to_json(self) -> dict:
        return {
            "name": self.name, "description": self.description, "kind": self.kind,
            "memory_mb": self.memory_mb, "headroom": self.headroom, "budget_mb": self.budget_mb,
            "precisions": list(self.precisions), "compute_capability": self.compute_capability,
            "tensorrt_sm": self.tensorrt_sm, "targets": self.targets, "source": self.source,
        }


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
    targets = data.get("targets", {})
    if not isinstance(targets, dict):
        raise _invalid(source, "[targets] must be a table")
    return DeviceProfile(
        name=name, description=str(data.get("description", "")), kind=kind, memory_mb=float(mem),
        headroom=float(headroom), precisions=tuple(precisions),
        compute_capability=dev.get("compute_capability"), tensorrt_sm=dev.get("tensorrt_sm"),
        targets=targets, source=source,
    )


def load_file(path: str | Path) -> DeviceProfile:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read device profile {path} ({exc})", "pass a readable TOML file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise _invalid(path, f"TOML: {exc}") from exc
    return parse(data, str(path))


def available() -> dict[str, Path]:
    return {p.stem: p for p in sorted(profiles_dir().glob("*.toml"))}


def get_profile(name_or_path: str | None = None) -> DeviceProfile:
    """A profile by name (shipped) or by path to a TOML file."""
    name_or_path = name_or_path or DEFAULT_PROFILE
    if name_or_path.endswith(".toml") or "/" in name_or_path:
        return load_file(name_or_path)
    shipped = available()
    if name_or_path not in shipped:
        raise UnknownChoiceError("device profile", name_or_path, shipped)
    return load_file(shipped[name_or_path])
