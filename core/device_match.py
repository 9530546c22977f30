"""Is the GPU here the device a profile describes? A throughput target of an RTX 3060 means
nothing when the timing came from an H100: such a target is "not measured here (measured on
NVIDIA H100 80GB HBM3)", never a PASS or FAIL.

A profile names its GPU in `device.gpu_names` (as NVML and torch spell it). A profile without
names matches a GPU of the same compute capability and memory size (within 3 %), which is as far
as a profile says anything about its card.
"""
from __future__ import annotations

import re

_NOISE = ("nvidia", "geforce")
MEMORY_TOLERANCE = 0.03


def normalise_gpu_name(name: str) -> str:
    """'NVIDIA GeForce RTX 3060 Laptop GPU' -> 'rtx 3060 laptop gpu': the vendor words NVML and
    torch add or drop are not part of the card's identity; case and punctuation are not either."""
    words = re.sub(r"[^a-z0-9]+", " ", str(name).lower()).split()
    return " ".join(w for w in words if w not in _NOISE)


def gpu_matches(profile, gpu: dict | None) -> bool:
    """True when `gpu` (an entry of xopt.machine.gpus(): name, compute_capability, memory_mb) is
    the profile's device."""
    if gpu is None or getattr(profile, "kind", "gpu") != "gpu":
        return False
    names = [normalise_gpu_name(n) for n in getattr(profile, "gpu_names", ()) or ()]
    if names:
        return normalise_gpu_name(gpu.get("name", "")) in names
    cc, mem = getattr(profile, "compute_capability", None), getattr(profile, "memory_mb", None)
    if not cc or not mem or not gpu.get("memory_mb"):
        return False
    return str(gpu.get("compute_capability")) == str(cc) and abs(gpu["memory_mb"] - mem) <= MEMORY_TOLERANCE * mem


def profile_gpu_label(profile) -> str:
    names = getattr(profile, "gpu_names", ()) or ()
    return names[0] if names else f"{profile.name} (compute capability {profile.compute_capability})"


def device_targets_not_here(profile, on_gpu: bool, gpus: list[dict] | None = None) -> str | None:
    """None when timings taken here stand for the profile's device; otherwise why not, the text a
    "not measured here (...)" check carries. `on_gpu`: the measurement ran on the GPU (a GPU
    backend); `gpus`: NVML's list (default: asked here)."""
    if getattr(profile, "kind", "gpu") != "gpu":
        return None
    if gpus is None:
        from xopt.machine import gpus as nvml_gpus

        gpus = nvml_gpus()
    if not on_gpu:
        where = "a CPU backend on a GPU machine" if gpus else "this is a CPU host"
        return f"a {profile.name} target; {where}"
    gpu = gpus[0] if gpus else None
    if gpu_matches(profile, gpu):
        return None
    return f"measured on {gpu['name'] if gpu else 'a GPU NVML does not list'}, not the profile's {profile_gpu_label(profile)}"
