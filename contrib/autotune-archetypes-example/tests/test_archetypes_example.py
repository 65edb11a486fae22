"""The example set loads, registers through the hook, adds an archetype and overrides per knob."""

from __future__ import annotations

from pathlib import Path

import pytest
from autotune_archetypes_example import ExampleArchetypesPlugin, example_set

from autotune_core.archetypes import Archetype, classify, profile_sets, resolve
from autotune_core.config import Settings
from autotune_core.hardware import CpuInfo, GiB, GpuInfo, HardwareSnapshot
from autotune_core.host import PluginHost

ARC_B580 = HardwareSnapshot(
    os="linux",
    cpu=CpuInfo(arch="x86_64"),
    ram_total_bytes=32 * GiB,
    gpus=[GpuInfo(vendor="intel", name="Intel Arc B580", memory_total_bytes=12 * GiB)],
)
RTX4090 = HardwareSnapshot(
    os="linux",
    cpu=CpuInfo(arch="x86_64"),
    ram_total_bytes=64 * GiB,
    gpus=[
        GpuInfo(vendor="nvidia", name="NVIDIA GeForce RTX 4090", memory_total_bytes=24 * GiB, compute_capability="8.9")
    ],
)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never read the developer's config, data folder or local overlay."""
    monkeypatch.setenv("AUTOTUNE_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.setenv("AUTOTUNE_DATA_DIR", str(tmp_path / "data"))


def _resolved(snapshot: HardwareSnapshot, *, section: str) -> tuple[Archetype, dict]:
    host = PluginHost(config=Settings(), hardware=snapshot, env={})  # entry points, as a user gets them
    sets, errors = profile_sets(host.archetype_sets)
    assert not errors
    archetype = classify(snapshot)
    return archetype, resolve(sets, archetype, section=section)


def test_the_set_is_valid_and_sourced() -> None:
    data = example_set()
    assert data.priority == 50 and set(data.profiles) == {"intel-battlemage-12gb", "nvidia-ada-24gb"}
    llama = data.profiles["intel-battlemage-12gb"].llamacpp
    assert llama is not None and llama.backend is not None and "SYCL" in llama.backend.source


def test_the_entry_point_registers_the_set() -> None:
    host = PluginHost(config=Settings(), hardware=ARC_B580, env={})
    assert host.records["archetypes-example"].enabled
    assert "archetypes:example-vendor" in host.records["archetypes-example"].registered


def test_adds_an_archetype() -> None:
    archetype, resolved = _resolved(ARC_B580, section="llamacpp")
    assert archetype.id == "intel-battlemage-12gb"
    assert resolved["llamacpp.backend"].value == "sycl"
    assert resolved["llamacpp.backend"].origin.set_name == "example-vendor"


def test_overrides_one_bundled_value_and_records_what_it_overrode() -> None:
    _archetype, resolved = _resolved(RTX4090, section="llamacpp")
    ubatch = resolved["llamacpp.ubatch_size"]
    assert ubatch.value == 2048 and ubatch.origin.set_name == "example-vendor"
    shadowed = [(value, origin.set_name) for value, origin in ubatch.shadowed]
    if any(name == "bundled" for _v, name in shadowed):  # autotune's own bundled set is installed
        assert (1024, "bundled") in shadowed
        assert resolved["num_batch"].origin.set_name == "bundled"  # everything else still bundled


def test_disabling_the_plugin_removes_the_set() -> None:
    host = PluginHost(config=Settings(), hardware=ARC_B580, env={"AUTOTUNE_DISABLE_PLUGINS": "archetypes-example"})
    assert all(plugin != "archetypes-example" for plugin, _set in host.archetype_sets)


def test_programmatic_registration_works_too(autotune_host_factory) -> None:
    """With autotune's own pytest fixture, as a plugin author tests a plugin alone."""
    host = autotune_host_factory(ExampleArchetypesPlugin(), hardware=ARC_B580)
    assert [s.name for _p, s in host.archetype_sets] == ["example-vendor"]
