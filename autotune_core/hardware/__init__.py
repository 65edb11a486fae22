"""The machine: what it has (``snapshot``: CPU, RAM, GPUs, the pressure tiers), how that is detected
(``detect``), GPU part tables (``gpu_parts``) and the live memory-pressure sampler (``sampler``).

The snapshot types are re-exported here, so ``from autotune_core.hardware import HardwareSnapshot`` works.
"""

from .snapshot import (
    CpuInfo,
    GiB,
    GpuInfo,
    GpuVendor,
    HardwareSnapshot,
    Pressure,
    PressureTier,
)

__all__ = ["CpuInfo", "GiB", "GpuInfo", "GpuVendor", "HardwareSnapshot", "Pressure", "PressureTier"]
