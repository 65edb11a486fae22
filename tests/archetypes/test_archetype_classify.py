"""Classification of real machines (recorded tool outputs) into stable archetype ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from archetype_helpers import ARCHETYPES, replay

from autotune_core.archetypes import classify
from autotune_core.hardware import GiB, HardwareSnapshot, gpu_parts


@pytest.mark.parametrize(
    ("recording", "expected", "tier"),
    [
        ("rtx4090.csv", "nvidia-ada-24gb", "high"),
        ("rtx3060_12gb.csv", "nvidia-ampere-12gb", "medium"),
        ("a100_80gb.csv", "nvidia-ampere-80gb", "extreme"),
        ("h100_x2.csv", "nvidia-hopper-2x80gb", "extreme"),
        # an old driver without compute_cap: the family comes from the name
        ("gtx1080ti_na_cc.csv", "nvidia-pascal-12gb", "high"),
    ],
)
def test_nvidia_smi_recordings(tmp_path: Path, recording: str, expected: str, tier: str) -> None:
    archetype = classify(replay(tmp_path, nvidia=recording))
    assert (archetype.id, archetype.bandwidth_tier, archetype.unified) == (expected, tier, False)


def test_nvidia_smi_without_devices_is_cpu_only(tmp_path: Path) -> None:
    archetype = classify(replay(tmp_path, nvidia="no_devices.txt", root="x86_cpu_only"))
    assert archetype.vendor == "cpu" and archetype.id.startswith("cpu-x86-")


def test_rocm_smi_rx7900xtx(tmp_path: Path) -> None:
    archetype = classify(replay(tmp_path, rocm="rx7900xtx.json"))
    assert (archetype.id, archetype.architecture, archetype.bandwidth_gbps) == ("amd-rdna3-24gb", "rdna3", 960)


@pytest.mark.parametrize(
    ("recording", "expected", "tier"),
    [
        ("m1_8gb", "apple-m1-8gb", "low"),
        ("m2_pro_16gb", "apple-m2-pro-16gb", "medium"),
        ("m3_max_64gb", "apple-m3-max-64gb", "high"),
        ("m4_max_128gb", "apple-m4-max-128gb", "high"),
    ],
)
def test_macos_sysctl_recordings(tmp_path: Path, recording: str, expected: str, tier: str) -> None:
    archetype = classify(replay(tmp_path, sysctl=recording))
    assert (archetype.id, archetype.bandwidth_tier, archetype.unified) == (expected, tier, True)


@pytest.mark.parametrize(
    ("root", "expected", "unified"),
    [
        ("strix_halo_128gb", "amd-strix-halo-128gb", True),
        ("ryzen_7840u_780m", "amd-phoenix-32gb", True),
        ("aarch64_graviton3", "cpu-arm64-8gb", False),
        ("x86_cpu_only", "cpu-x86-32gb", False),
    ],
)
def test_linux_proc_and_sysfs_recordings(tmp_path: Path, root: str, expected: str, unified: bool) -> None:
    archetype = classify(replay(tmp_path, root=root))
    assert (archetype.id, archetype.unified) == (expected, unified)


def test_intel_iris_xe_is_unified_xe(tmp_path: Path) -> None:
    archetype = classify(replay(tmp_path, root="intel_iris_xe", ram_gib=16))
    assert (archetype.id, archetype.unified) == ("intel-xe-16gb", True)


@pytest.mark.parametrize("fixture", sorted(p.name for p in ARCHETYPES.glob("*.json")))
def test_more_machines_from_snapshots(fixture: str) -> None:
    data = json.loads((ARCHETYPES / fixture).read_text())
    assert classify(HardwareSnapshot.model_validate(data["snapshot"])).id == data["expected"]


def test_the_id_is_stable_and_includes_the_tier_only_in_lookup_keys(tmp_path: Path) -> None:
    first, second = classify(replay(tmp_path, nvidia="rtx4090.csv")), classify(replay(tmp_path, nvidia="rtx4090.csv"))
    assert first == second
    assert first.lookup_keys() == ["nvidia-ada-24gb-bw-high", "nvidia-ada-24gb"]


@pytest.mark.parametrize(
    ("gib", "bucket"),
    [
        (0, 4),
        (3.8, 4),
        (7.6, 8),
        (10, 8),
        (11, 12),
        (15.9, 16),
        (18, 16),
        (23.99, 24),
        (36, 32),
        (40, 32),
        (44, 48),
        (79.2, 80),
        (119.7, 128),
        (192, 192),
        (1024, 512),
    ],
)
def test_memory_buckets_round_to_the_nearest_standard_size(gib: float, bucket: int) -> None:
    assert gpu_parts.memory_bucket_gb(int(gib * GiB)) == bucket


@pytest.mark.parametrize(
    ("cc", "family"),
    [
        ("7.5", "turing"),
        ("8.0", "ampere"),
        ("8.6", "ampere"),
        ("8.7", "ampere"),
        ("8.9", "ada"),
        ("9.0", "hopper"),
        ("10.0", "blackwell"),
        ("12.0", "blackwell"),
        ("12.1", "blackwell"),
        ("5.2", None),
        ("garbage", None),
    ],
)
def test_nvidia_compute_capability_families(cc: str, family: str | None) -> None:
    assert gpu_parts.nvidia_family(cc) == family


@pytest.mark.parametrize(
    ("gfx", "name", "expected"),
    [
        ("gfx1100", "", ("rdna3", "")),
        ("gfx1151", "", ("rdna3.5", "strix-halo")),
        ("gfx1103", "", ("rdna3", "phoenix")),
        ("gfx1030", "", ("rdna2", "")),
        ("gfx90a", "", ("cdna2", "")),
        ("gfx942:sramecc+:xnack-", "", ("cdna3", "")),
        (None, "AMD Radeon 780M Graphics", ("rdna3", "phoenix")),
        (None, "Some Future GPU", None),
    ],
)
def test_amd_gfx_targets(gfx: str | None, name: str, expected: tuple[str, str] | None) -> None:
    assert gpu_parts.amd_gfx(gfx, name) == expected


def test_bandwidth_tiers_and_unknown_parts() -> None:
    assert gpu_parts.bandwidth_tier(gpu_parts.bandwidth_gbps("NVIDIA GeForce RTX 4060 Ti")) == "medium"
    assert gpu_parts.bandwidth_gbps("NVIDIA GeForce RTX 4060 Ti") == 288
    assert gpu_parts.bandwidth_gbps("NVIDIA GeForce RTX 4060") == 272
    assert gpu_parts.bandwidth_tier(gpu_parts.bandwidth_gbps("Mystery Accelerator 9000")) == "unknown"
