"""Which GPU's timings stand for a device profile: the RTX 3060 Laptop profile is judged only on
that card; an H100 (or a desktop RTX 3060) reads "not measured here (measured on ...)"."""
from __future__ import annotations

import dataclasses

import pytest

from xopt.device_match import device_targets_not_here, gpu_matches, normalise_gpu_name
from xopt.errors import UserError
from xopt.profiles import get_profile, parse

LAPTOP = {"name": "NVIDIA GeForce RTX 3060 Laptop GPU", "memory_mb": 12288.0, "compute_capability": "8.6"}
DESKTOP = {"name": "NVIDIA GeForce RTX 3060", "memory_mb": 12288.0, "compute_capability": "8.6"}
H100 = {"name": "NVIDIA H100 80GB HBM3", "memory_mb": 81559.0, "compute_capability": "9.0"}
PROFILE = get_profile("rtx3060-laptop-12gb")


def test_names_compare_without_vendor_words_case_or_punctuation():
    assert normalise_gpu_name("NVIDIA GeForce RTX 3060 Laptop GPU") == "rtx 3060 laptop gpu"
    assert normalise_gpu_name("GeForce RTX-3060 laptop GPU") == "rtx 3060 laptop gpu"
    assert normalise_gpu_name(b"x".decode()) == "x"


@pytest.mark.parametrize("gpu, matches", [(LAPTOP, True), (DESKTOP, False), (H100, False), (None, False)])
def test_the_3060_laptop_profile_matches_only_its_card(gpu, matches):
    assert PROFILE.gpu_names == ("NVIDIA GeForce RTX 3060 Laptop GPU",)
    assert gpu_matches(PROFILE, gpu) is matches


def test_a_profile_without_names_matches_compute_capability_and_memory():
    unnamed = dataclasses.replace(PROFILE, gpu_names=())
    assert gpu_matches(unnamed, DESKTOP) and gpu_matches(unnamed, {**DESKTOP, "memory_mb": 12000.0})
    assert not gpu_matches(unnamed, {**DESKTOP, "memory_mb": 8192.0}) and not gpu_matches(unnamed, H100)


def test_why_device_targets_are_not_judged_here():
    assert device_targets_not_here(PROFILE, True, [LAPTOP]) is None
    assert device_targets_not_here(PROFILE, True, [H100]) == (
        "measured on NVIDIA H100 80GB HBM3, not the profile's NVIDIA GeForce RTX 3060 Laptop GPU")
    assert device_targets_not_here(PROFILE, False, [H100]) == "a rtx3060-laptop-12gb target; a CPU backend on a GPU machine"
    assert device_targets_not_here(PROFILE, False, []) == "a rtx3060-laptop-12gb target; this is a CPU host"
    assert device_targets_not_here(get_profile("cpu"), False, []) is None  # a CPU profile is judged on any CPU


def test_gpu_names_in_a_profile_are_validated():
    base = {"name": "p", "kind": "gpu", "device": {"memory_mb": 8192}}
    assert parse({**base, "device": {"memory_mb": 8192, "gpu_names": ["NVIDIA GeForce RTX 4060"]}}).gpu_names == (
        "NVIDIA GeForce RTX 4060",)
    with pytest.raises(UserError, match="gpu_names must be a list of GPU names"):
        parse({**base, "device": {"memory_mb": 8192, "gpu_names": "RTX 4060"}})
    assert get_profile("rtx3060-laptop-12gb").to_json()["gpu_names"] == ["NVIDIA GeForce RTX 3060 Laptop GPU"]
