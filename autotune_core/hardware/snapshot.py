"""What the machine is: CPU, RAM, swap and GPUs, and the memory-pressure tiers. Detection lives in ``detect``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

GiB = 1024**3

GpuVendor = Literal["nvidia", "amd", "apple", "intel", "other"]


class CpuInfo(BaseModel):
    brand: str = "unknown"
    arch: str = "unknown"
    vendor: str = "unknown"
    cores_physical: int = 1
    cores_logical: int = 1
    flags: list[str] = Field(default_factory=list)


class GpuInfo(BaseModel):
    vendor: GpuVendor
    name: str
    memory_total_bytes: int = 0
    memory_used_bytes: int | None = None
    #: NVIDIA compute capability such as "8.9"
    compute_capability: str | None = None
    #: AMD gfx target such as "gfx1151"
    gfx_target: str | None = None
    #: Apple generation such as "M2 Pro"
    apple_chip: str | None = None
    integrated: bool = False
    driver: str | None = None

    @property
    def memory_free_bytes(self) -> int | None:
        if self.memory_used_bytes is None:
            return None
        return max(0, self.memory_total_bytes - self.memory_used_bytes)


class HardwareSnapshot(BaseModel):
    """A point-in-time picture of the machine, taken once at start-up and refreshed by the sampler."""

    os: str = "unknown"
    cpu: CpuInfo = Field(default_factory=CpuInfo)
    ram_total_bytes: int = 0
    ram_available_bytes: int = 0
    swap_total_bytes: int = 0
    swap_used_bytes: int = 0
    gpus: list[GpuInfo] = Field(default_factory=list)
    unified_memory: bool = False

    @property
    def primary_gpu(self) -> GpuInfo | None:
        """The discrete GPU with the most memory, else the first GPU."""
        if not self.gpus:
            return None
        discrete = [g for g in self.gpus if not g.integrated]
        pool = discrete or self.gpus
        return max(pool, key=lambda g: g.memory_total_bytes)

    @property
    def accelerator_memory_bytes(self) -> int:
        """Memory the model can use on the accelerator: VRAM of a discrete GPU, else RAM."""
        gpu = self.primary_gpu
        if gpu is not None and not gpu.integrated and not self.unified_memory and gpu.memory_total_bytes:
            return gpu.memory_total_bytes
        return self.ram_total_bytes

    def memory_budget_bytes(self, safety_margin_bytes: int = int(1.5 * GiB)) -> int:
        """Bytes a new model + KV may take without swapping, after a safety margin.

        Discrete GPU: free VRAM. Apple unified memory: about 75 % of RAM is GPU-addressable,
        bounded by what is actually available. Otherwise: available RAM.
        """
        gpu = self.primary_gpu
        if gpu is not None and not gpu.integrated and not self.unified_memory and gpu.memory_total_bytes:
            free = gpu.memory_free_bytes
            base = free if free is not None else gpu.memory_total_bytes
        elif self.unified_memory:
            base = min(self.ram_available_bytes, int(self.ram_total_bytes * 0.75))
        else:
            base = self.ram_available_bytes
        return max(0, base - safety_margin_bytes)


PressureTier = Literal["normal", "moderate", "high", "critical"]


class Pressure(BaseModel):
    """Memory pressure: the tier and the numbers behind it."""

    tier: PressureTier = "normal"
    ram_percent: float = 0.0
    swap_percent: float = 0.0
    available_bytes: int = 0
    swap_used_bytes: int = 0
    #: bytes per second of swap growth over the sampler's window (positive: swapping out)
    swap_growth_bytes_per_s: float = 0.0
    cpu_percent: float | None = None
    gpu_memory_percent: float | None = None
    timestamp: float = 0.0
