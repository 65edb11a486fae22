"""Shared helpers for the archetype tests: replay recorded machines, build hosts, small profile sets."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from autotune_core.hardware import GiB, HardwareSnapshot
from autotune_core.hardware.detect import detect_hardware
from autotune_core.markers import hookimpl

TESTS = Path(__file__).resolve().parent.parent
HARDWARE = TESTS / "fixtures" / "hardware"
ARCHETYPES = TESTS / "fixtures" / "archetypes"


class Replay:
    """Answers external commands from recorded outputs; any other command is a missing tool."""

    def __init__(
        self, *, nvidia: str | None = None, rocm: str | None = None, sysctl: dict[str, str] | None = None
    ) -> None:
        self.nvidia, self.rocm, self.sysctl = nvidia, rocm, sysctl or {}

    def __call__(self, argv: list[str], timeout: float) -> str | None:
        if argv[0] == "nvidia-smi":
            return self.nvidia
        if argv[0] == "rocm-smi":
            return self.rocm
        if argv[0] == "sysctl" and argv[1] == "-n":
            value = self.sysctl.get(argv[2])
            return None if value is None else value + "\n"
        return None


def sysctl_recording(name: str) -> dict[str, str]:
    out = {}
    for line in (HARDWARE / "sysctl" / f"{name}.txt").read_text().splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            out[key.strip()] = value.strip()
    return out


def replay(
    tmp_path: Path,
    *,
    nvidia: str | None = None,
    rocm: str | None = None,
    sysctl: str | None = None,
    root: str | None = None,
    ram_gib: float = 64,
) -> HardwareSnapshot:
    """A snapshot from recorded tool outputs / a recorded file-system root (tests/fixtures/hardware)."""
    runner = Replay(
        nvidia=(HARDWARE / "nvidia-smi" / nvidia).read_text() if nvidia else None,
        rocm=(HARDWARE / "rocm-smi" / rocm).read_text() if rocm else None,
        sysctl=sysctl_recording(sysctl) if sysctl else None,
    )
    vm = SimpleNamespace(total=int(ram_gib * GiB), available=int(ram_gib * GiB / 2))
    return detect_hardware(
        runner=runner,
        sysfs_root=HARDWARE / "roots" / root if root else tmp_path,
        platform_name="Darwin" if sysctl else "Linux",
        vm=lambda: vm,
        swap=lambda: SimpleNamespace(total=0, used=0),
    )


def profile_set(
    name: str, profiles: dict[str, Any], *, version: int = 1, priority: int = 0, source: str = "test"
) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "name": name,
        "version": version,
        "priority": priority,
        "source": source,
        "profiles": profiles,
    }


class SetsPlugin:
    """Registers the given profile sets (plain dicts or ProfileSet objects)."""

    def __init__(self, name: str, *sets: Any) -> None:
        self.name = name
        self.sets = sets

    @hookimpl
    def register_archetypes(self, register: Any) -> None:
        for item in self.sets:
            register(item)
