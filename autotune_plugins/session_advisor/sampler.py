"""Reading the machine for the advisor: RAM, swap, CPU, heat and GPU memory.

Thermal sources are injectable (Linux ``/sys/class/thermal``, macOS ``pmset -g therm``) and read at
most every 5 s; nothing here is called on the event loop (the plugin samples in a worker thread).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from .health import Sample


def classify_celsius(temp: float) -> str:
    return (
        "critical"
        if temp >= 95
        else "throttling"
        if temp >= 90
        else "warning"
        if temp >= 85
        else "warm"
        if temp >= 75
        else "normal"
    )


def linux_thermal(root: Path) -> str:
    """The hottest zone under ``root`` (``thermal_zone*/temp`` in millidegrees)."""
    temps: list[float] = []
    for path in root.glob("thermal_zone*/temp"):
        try:
            temps.append(int(path.read_text().strip()) / 1000)
        except (OSError, ValueError):
            continue
    return classify_celsius(max(temps)) if temps else "normal"


def parse_pmset(text: str) -> str:
    """``pmset -g therm``: a CPU speed limit below 100 % means the machine is throttling."""
    match = re.search(r"CPU_Speed_Limit\s*=\s*(\d+)", text)
    if match:
        limit = int(match.group(1))
        if limit < 100:
            return "critical" if limit < 50 else "throttling" if limit < 80 else "warning"
    if re.search(r"thermal warning level (set to|is) [1-9]", text, re.IGNORECASE):
        return "warning"
    return "normal"


def _run_pmset() -> str:
    return subprocess.run(["pmset", "-g", "therm"], capture_output=True, text=True, timeout=3).stdout


def amd_gpu_memory(root: Path = Path("/sys/class/drm")) -> float | None:
    best: float | None = None
    for used_path in root.glob("card[0-9]*/device/mem_info_vram_used"):
        try:
            used = int(used_path.read_text())
            total = int(used_path.with_name("mem_info_vram_total").read_text())
        except (OSError, ValueError):
            continue
        if total > 0:
            best = max(best or 0.0, 100 * used / total)
    return best


class SystemSampler:
    """psutil for RAM/swap/CPU; thermal and GPU readers injectable for tests and other platforms."""

    def __init__(
        self,
        *,
        thermal_root: Path = Path("/sys/class/thermal"),
        pmset: Callable[[], str] | None = None,
        gpu: Callable[[], float | None] | None = None,
        platform: str = sys.platform,
    ) -> None:
        self.thermal_root = thermal_root
        self.pmset = pmset or _run_pmset
        self.gpu = gpu or amd_gpu_memory
        self.platform = platform
        self._thermal: tuple[float, str] = (-1e9, "normal")
        psutil.cpu_percent(None)  # prime: the first reading is meaningless

    def thermal(self) -> str:
        now = time.monotonic()
        if now - self._thermal[0] < 5:
            return self._thermal[1]
        try:
            if self.platform == "darwin":
                state = parse_pmset(self.pmset())
            elif self.platform.startswith("linux"):
                state = linux_thermal(self.thermal_root)
            else:
                state = "normal"
        except (OSError, subprocess.SubprocessError):
            state = "normal"
        self._thermal = (now, state)
        return state

    def sample(self) -> Sample:
        vm = psutil.virtual_memory()
        swap = psutil.swap_memory()
        try:
            gpu = self.gpu()
        except Exception:
            gpu = None
        return Sample(
            ram_percent=float(vm.percent),
            ram_used_bytes=int(vm.total - vm.available),
            swap_percent=float(swap.percent),
            swap_used_bytes=int(swap.used),
            cpu_percent=psutil.cpu_percent(None),
            thermal=self.thermal(),
            gpu_memory_percent=gpu,
        )
