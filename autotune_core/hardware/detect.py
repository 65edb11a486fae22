"""Detects the machine: CPU, RAM, swap and GPUs, as a :class:`~autotune_core.hardware.HardwareSnapshot`.

Sources, in order of trust:

* CPU: ``/proc/cpuinfo`` on Linux (fast), ``sysctl`` on macOS, py-cpuinfo as the slow fallback
  (about a second: it spawns a subprocess), only when the brand is still unknown. The CPU part
  never changes while the process runs, so it is cached per process.
* RAM and swap: psutil (or ``<root>/proc/meminfo`` when a recorded file-system root is given).
* NVIDIA: ``nvidia-smi --query-gpu=...`` (CSV, MiB). NVIDIA GPUs are only reported through it.
* AMD: ``rocm-smi ... --json``, else sysfs ``/sys/class/drm/card*/device`` (vendor ``0x1002``,
  ``mem_info_vram_*``) plus the gfx target from the KFD topology. Integrated APUs (Strix Halo,
  Phoenix, ...) are marked ``integrated``; their ``memory_total_bytes`` is the BIOS carve-out.
* Apple Silicon: ``sysctl -n machdep.cpu.brand_string`` / ``hw.memsize``; one integrated GPU
  whose memory is all of RAM, and ``unified_memory`` on the snapshot.
* Intel: sysfs vendor ``0x8086`` (integrated unless a known Arc discrete part).

Every external command goes through a :class:`CommandRunner` (injectable for tests) with a 2 s
timeout; a missing or failing tool means "no such GPU", never an exception.
"""

from __future__ import annotations

import functools
import json
import logging
import platform
import re
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import psutil

from .part_tables import (
    _X86_VENDORS,
    AMD_APU_DEVICES,
    AMD_APU_GFX,
    AMD_DEVICE_BY_VRAM,
    AMD_DEVICE_NAMES,
    ARM_IMPLEMENTERS,
    ARM_PARTS,
    INTEL_DISCRETE,
    INTEL_INTEGRATED_NAMES,
)
from .snapshot import CpuInfo, GiB, GpuInfo, HardwareSnapshot

log = logging.getLogger(__name__)

#: seconds any external tool may take before it counts as missing
COMMAND_TIMEOUT_S = 2.0
MiB = 1024**2

NVIDIA_FIELDS: tuple[str, ...] = ("name", "memory.total", "memory.used", "compute_cap", "driver_version")
#: drivers older than 510 do not know ``compute_cap``; the query is retried without it
NVIDIA_LEGACY_FIELDS: tuple[str, ...] = ("name", "memory.total", "memory.used", "driver_version")
ROCM_SMI_ARGV: tuple[str, ...] = ("rocm-smi", "--showproductname", "--showmeminfo", "vram", "--showuniqueid", "--json")

AMD_PCI_VENDOR = 0x1002
INTEL_PCI_VENDOR = 0x8086
NVIDIA_PCI_VENDOR = 0x10DE

_NA_VALUES = frozenset({"", "n/a", "[n/a]", "[not supported]", "not supported", "[unknown error]", "none"})


class CommandRunner(Protocol):
    """Runs ``argv`` and returns its standard output, or None when missing, failing or too slow."""

    def __call__(self, argv: list[str], timeout: float) -> str | None: ...


def run_command(argv: list[str], timeout: float = COMMAND_TIMEOUT_S) -> str | None:
    """The real :class:`CommandRunner`: stdout of a successful run, else None. Never raises."""
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
            encoding="utf-8",
            errors="replace",
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
        )
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        log.debug("%s: %s", argv[0] if argv else "?", exc)
        return None
    if proc.returncode != 0:
        log.debug("%s exited with %s: %s", argv[0], proc.returncode, (proc.stderr or "").strip()[:200])
        return None
    return proc.stdout


def _run(runner: CommandRunner, argv: list[str]) -> str | None:
    try:
        return runner(argv, COMMAND_TIMEOUT_S)
    except Exception as exc:  # an injected runner must not break detection either
        log.debug("runner failed for %s: %s", argv, exc)
        return None


# -- small readers ---------------------------------------------------------------------------------


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except (OSError, ValueError):
        return None


def _read_int(path: Path) -> int | None:
    text = _read_text(path)
    return _parse_int(text) if text is not None else None


def _parse_int(text: str) -> int | None:
    value = text.strip()
    if value.lower() in _NA_VALUES:
        return None
    try:
        return int(value, 0)
    except ValueError:
        try:
            return int(float(value))
        except ValueError:
            return None


def _na(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return None if value.lower() in _NA_VALUES else value


def _clean(text: str) -> str:
    return " ".join(text.split())


# -- CPU -------------------------------------------------------------------------------------------


def _cpuinfo_blocks(text: str) -> list[dict[str, str]]:
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                current = {}
            continue
        key, sep, value = line.partition(":")
        if sep:
            current[key.strip()] = value.strip()
    if current:
        blocks.append(current)
    return blocks


def parse_proc_cpuinfo(text: str, machine: str = "") -> CpuInfo:
    """A :class:`CpuInfo` from the text of ``/proc/cpuinfo`` (x86 and ARM layouts)."""
    blocks = _cpuinfo_blocks(text)
    cpus = [b for b in blocks if "processor" in b]
    extra: dict[str, str] = {}
    for block in blocks:
        if "processor" not in block:
            extra.update(block)
    first = cpus[0] if cpus else extra
    logical = len(cpus) or 1

    brand = _clean(first.get("model name", ""))
    vendor = _X86_VENDORS.get(first.get("vendor_id", "").strip(), first.get("vendor_id", "").lower())
    flags = first.get("flags", "").split() or first.get("Features", "").split()
    arch = machine
    implementer = _parse_int(first.get("CPU implementer", ""))
    if implementer is not None:
        vendor = ARM_IMPLEMENTERS.get(implementer, f"arm-0x{implementer:02x}")
        names: list[str] = []
        for cpu in cpus:
            impl = _parse_int(cpu.get("CPU implementer", ""))
            part = _parse_int(cpu.get("CPU part", ""))
            name = ARM_PARTS.get((impl, part)) if impl is not None and part is not None else None
            if name and name not in names:
                names.append(name)
        # "model name" on ARM is a generic "ARMv8 Processor rev 1 (v8l)": the core names say more
        if names and (not brand or brand.lower().startswith("armv")):
            prefix = "ARM" if vendor == "arm" else vendor.capitalize()
            brand = f"{prefix} " + " + ".join(names)
        if not arch:
            arch = "aarch64" if first.get("CPU architecture", "").strip() in ("8", "9", "AArch64") else "arm"
    if not arch and ("lm" in flags or vendor in ("intel", "amd")):
        arch = "x86_64" if "lm" in flags else "x86"
    cores = {(c.get("physical id", "0"), c["core id"]) for c in cpus if "core id" in c}
    physical = len(cores) or logical
    return CpuInfo(
        brand=brand or "unknown",
        arch=arch or "unknown",
        vendor=vendor or "unknown",
        cores_physical=physical,
        cores_logical=logical,
        flags=flags,
    )


def _sysctl(runner: CommandRunner, key: str) -> str | None:
    out = _run(runner, ["sysctl", "-n", key])
    return _na(out.strip()) if out is not None else None


def _cpu_from_sysctl(runner: CommandRunner) -> CpuInfo:
    brand = _clean(_sysctl(runner, "machdep.cpu.brand_string") or "")
    machine = _sysctl(runner, "hw.machine") or ("arm64" if brand.startswith("Apple") else "")
    physical = _parse_int(_sysctl(runner, "hw.physicalcpu") or "")
    logical = _parse_int(_sysctl(runner, "hw.logicalcpu") or "")
    vendor = "apple" if brand.startswith("Apple") else "intel" if "intel" in brand.lower() else "unknown"
    flags = (_sysctl(runner, "machdep.cpu.features") or "").lower().split() if vendor == "intel" else []
    logical = logical or physical or 1
    return CpuInfo(
        brand=brand or "unknown",
        arch=machine or "unknown",
        vendor=vendor,
        cores_physical=physical or logical,
        cores_logical=logical,
        flags=flags,
    )


def _cpu_from_py_cpuinfo(base: CpuInfo) -> CpuInfo:
    """The slow fallback (~1 s): only for the real machine and only when the brand is unknown."""
    try:
        import cpuinfo

        info: dict[str, Any] = cpuinfo.get_cpu_info()
    except Exception as exc:
        log.debug("py-cpuinfo failed: %s", exc)
        return base
    vendor = str(info.get("vendor_id_raw") or "")
    flags = [str(f) for f in info.get("flags") or []]
    return base.model_copy(
        update={
            "brand": _clean(str(info.get("brand_raw") or "")) or base.brand,
            "arch": base.arch if base.arch != "unknown" else str(info.get("arch_string_raw") or "unknown"),
            "vendor": base.vendor
            if base.vendor != "unknown"
            else _X86_VENDORS.get(vendor, vendor.lower() or "unknown"),
            "flags": base.flags or flags,
        }
    )


def _detect_cpu(system: str, root: Path, runner: CommandRunner, *, local: bool) -> CpuInfo:
    machine = platform.machine() if local else ""
    if system == "Darwin":
        cpu = _cpu_from_sysctl(runner)
    else:
        text = _read_text(root / "proc" / "cpuinfo") if system == "Linux" else None
        cpu = parse_proc_cpuinfo(text, machine) if text else CpuInfo(arch=machine or "unknown")
    if local:
        logical = psutil.cpu_count(logical=True)
        physical = psutil.cpu_count(logical=False)
        update: dict[str, Any] = {}
        if cpu.cores_logical <= 1 and logical:
            update["cores_logical"] = logical
        if cpu.cores_physical <= 1 and physical:
            update["cores_physical"] = physical
        if update:
            cpu = cpu.model_copy(update=update)
        if cpu.brand == "unknown":
            cpu = _cpu_from_py_cpuinfo(cpu)
    return cpu


@functools.lru_cache(maxsize=4)
def _local_cpu(system: str) -> CpuInfo:
    """The CPU of this machine; it does not change while the process lives."""
    return _detect_cpu(system, Path("/"), run_command, local=True)


# -- memory ----------------------------------------------------------------------------------------


def parse_meminfo(text: str) -> dict[str, int]:
    """``/proc/meminfo`` as bytes per field (``kB`` values converted)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        parts = rest.split()
        if not sep or not parts:
            continue
        try:
            value = int(parts[0])
        except ValueError:
            continue
        out[key.strip()] = value * 1024 if len(parts) > 1 and parts[1] == "kB" else value
    return out


# -- NVIDIA ----------------------------------------------------------------------------------------


def _nvidia_argv(fields: Iterable[str]) -> list[str]:
    return ["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"]


def parse_nvidia_smi(text: str, fields: tuple[str, ...] = NVIDIA_FIELDS) -> list[GpuInfo]:
    """GPUs from ``nvidia-smi --query-gpu=<fields> --format=csv,noheader,nounits`` (memory in MiB)."""
    gpus: list[GpuInfo] = []
    for line in text.splitlines():
        values = [v.strip() for v in line.split(",")]
        if len(values) != len(fields):
            continue  # "No devices were found", warnings, ...
        row = dict(zip(fields, values, strict=True))
        name = _na(row.get("name"))
        if not name:
            continue
        total = _mib(row.get("memory.total"))
        # GB10 (DGX Spark) and Jetson share system RAM and report no memory of their own
        gpus.append(
            GpuInfo(
                vendor="nvidia",
                name=name,
                memory_total_bytes=total or 0,
                memory_used_bytes=_mib(row.get("memory.used")) if total is not None else None,
                compute_capability=_na(row.get("compute_cap")),
                integrated=total is None,
                driver=_na(row.get("driver_version")),
            )
        )
    return gpus


def _mib(value: str | None) -> int | None:
    value = _na(value)
    if value is None:
        return None
    try:
        return int(float(value.split()[0]) * MiB)
    except (ValueError, IndexError):
        return None


def _detect_nvidia(runner: CommandRunner) -> list[GpuInfo]:
    out = _run(runner, _nvidia_argv(NVIDIA_FIELDS))
    if out is not None:
        return parse_nvidia_smi(out, NVIDIA_FIELDS)
    out = _run(runner, _nvidia_argv(NVIDIA_LEGACY_FIELDS))
    return parse_nvidia_smi(out, NVIDIA_LEGACY_FIELDS) if out is not None else []


# -- AMD: rocm-smi ---------------------------------------------------------------------------------


def _json_object(text: str) -> dict[str, Any]:
    """The JSON object in ``text``, tolerating warnings printed around it."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return {}
    try:
        data = json.loads(text[start : end + 1])
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _card_index(key: str) -> int:
    match = re.search(r"\d+", key)
    return int(match.group()) if match else 0


def _amd_name(series: str | None, model: str | None, device: int | None, vram: int) -> str | None:
    """A marketing name: "Navi 31 [Radeon RX 7900 XT/7900 XTX]" with 24 GiB -> "AMD Radeon RX 7900 XTX"."""
    by_vram = AMD_DEVICE_BY_VRAM.get(device or -1)
    if by_vram and vram:
        hit = by_vram.get(round(vram / GiB))
        if hit:
            return hit
    for raw in (series, model):
        text = _na(raw)
        if not text or re.fullmatch(r"0x[0-9a-fA-F]+", text):
            continue
        inner = re.search(r"\[([^\]]+)\]", text)
        name = _clean(inner.group(1) if inner else text)
        if not name.upper().startswith("AMD"):
            name = f"AMD {name}"
        return name
    if device is not None and device in AMD_DEVICE_NAMES:
        return AMD_DEVICE_NAMES[device]
    return None


def _amd_integrated(gfx: str | None, device: int | None) -> bool:
    return (gfx or "").lower() in AMD_APU_GFX or (device is not None and device in AMD_APU_DEVICES)


def parse_rocm_smi(*outputs: str) -> list[GpuInfo]:
    """GPUs from ``rocm-smi --json`` outputs: one combined run, or several runs merged per card.

    Reads "Card Series"/"Card series"/"Device Name", "Card Model"/"Device ID", "GFX Version",
    "VRAM Total Memory (B)" and "VRAM Total Used Memory (B)"; keys are matched case-insensitively.
    """
    cards: dict[str, dict[str, str]] = {}
    for text in outputs:
        for key, value in _json_object(text).items():
            if str(key).lower().startswith("card") and isinstance(value, dict):
                fields = cards.setdefault(str(key), {})
                fields.update({str(k).strip().lower(): str(v) for k, v in value.items()})
    gpus: list[GpuInfo] = []
    for key in sorted(cards, key=_card_index):
        fields = cards[key]
        total = _parse_int(fields.get("vram total memory (b)", ""))
        used = _parse_int(fields.get("vram total used memory (b)", ""))
        gfx = _na(fields.get("gfx version"))
        device = _parse_int(fields.get("device id", "") or fields.get("card model", ""))
        name = _amd_name(
            fields.get("card series") or fields.get("device name"), fields.get("card model"), device, total or 0
        )
        if name is None and total is None:
            continue
        gpus.append(
            GpuInfo(
                vendor="amd",
                name=name or (f"AMD GPU ({gfx})" if gfx else "AMD GPU"),
                memory_total_bytes=total or 0,
                memory_used_bytes=used,
                gfx_target=gfx.lower() if gfx else None,
                integrated=_amd_integrated(gfx, device),
            )
        )
    return gpus


# -- sysfs (AMD, Intel) ----------------------------------------------------------------------------


def gfx_from_target_version(version: int) -> str | None:
    """KFD ``gfx_target_version`` to a gfx target: 110501 -> "gfx1151", 90010 -> "gfx90a"."""
    if version <= 0:
        return None
    major, minor, stepping = version // 10000, (version // 100) % 100, version % 100
    return f"gfx{major}{minor}{stepping:x}"


def _kfd_gpu_nodes(root: Path) -> list[dict[str, int]]:
    base = root / "sys" / "class" / "kfd" / "kfd" / "topology" / "nodes"
    try:
        entries = sorted((p for p in base.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    except OSError:
        return []
    nodes: list[dict[str, int]] = []
    for entry in entries:
        text = _read_text(entry / "properties")
        if not text:
            continue
        props: dict[str, int] = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].lstrip("-").isdigit():
                props[parts[0]] = int(parts[1])
        if props.get("gfx_target_version", 0) > 0:
            nodes.append(props)
    return nodes


def _pci_location(slot: str) -> tuple[int, int] | None:
    """ "0000:c5:00.0" -> (domain, KFD location_id = bus << 8 | device << 3 | function)."""
    match = re.fullmatch(r"([0-9a-fA-F]+):([0-9a-fA-F]+):([0-9a-fA-F]+)\.([0-7])", slot.strip())
    if match is None:
        return None
    domain, bus, dev, fn = (int(g, 16) for g in match.groups())
    return domain, (bus << 8) | (dev << 3) | fn


class _DrmCard:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.device_dir = path / "device"
        self.vendor = _read_int(self.device_dir / "vendor")
        self.device = _read_int(self.device_dir / "device")
        uevent = _read_text(self.device_dir / "uevent") or ""
        self.uevent: dict[str, str] = {}
        for line in uevent.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                self.uevent[key.strip()] = value.strip()

    def read_int(self, name: str) -> int | None:
        return _read_int(self.device_dir / name)

    @property
    def location(self) -> tuple[int, int] | None:
        slot = self.uevent.get("PCI_SLOT_NAME")
        return _pci_location(slot) if slot else None


def _drm_cards(root: Path) -> list[_DrmCard] | None:
    """The DRM cards (``card0``, ``card1`` ...; not connectors); None when there is no DRM folder."""
    base = root / "sys" / "class" / "drm"
    try:
        names = [p for p in base.iterdir() if re.fullmatch(r"card\d+", p.name)]
    except OSError:
        return None
    return [_DrmCard(p) for p in sorted(names, key=lambda p: int(p.name[4:]))]


def _match_kfd(card: _DrmCard, nodes: list[dict[str, int]], used: set[int]) -> dict[str, int] | None:
    location = card.location
    candidates = [(i, n) for i, n in enumerate(nodes) if i not in used and n.get("device_id") == card.device]
    for i, node in candidates:
        if location is not None and (node.get("domain", 0), node.get("location_id")) == location:
            used.add(i)
            return node
    if candidates:
        used.add(candidates[0][0])
        return candidates[0][1]
    return None


def _apu_name_from_cpu(cpu_brand: str) -> str | None:
    """ "AMD RYZEN AI MAX+ 395 w/ Radeon 8060S" -> "AMD Radeon 8060S"."""
    match = re.search(r"\bw/\s*(Radeon.*)$", cpu_brand, re.IGNORECASE)
    return f"AMD {_clean(match.group(1))}" if match else None


def _amd_from_sysfs(cards: list[_DrmCard], nodes: list[dict[str, int]], cpu_brand: str) -> list[GpuInfo]:
    gpus: list[GpuInfo] = []
    used: set[int] = set()
    for card in cards:
        if card.vendor != AMD_PCI_VENDOR:
            continue
        node = _match_kfd(card, nodes, used)
        gfx = gfx_from_target_version(node["gfx_target_version"]) if node else None
        integrated = _amd_integrated(gfx, card.device)
        total = card.read_int("mem_info_vram_total") or 0
        name = _na(_read_text(card.device_dir / "product_name"))
        if not name and integrated:
            name = _apu_name_from_cpu(cpu_brand)
        name = name or _amd_name(None, None, card.device, total)
        if not name:
            name = f"AMD Radeon ({gfx})" if gfx else f"AMD GPU 0x{card.device or 0:04x}"
        gpus.append(
            GpuInfo(
                vendor="amd",
                name=name,
                memory_total_bytes=total,
                memory_used_bytes=card.read_int("mem_info_vram_used"),
                gfx_target=gfx,
                integrated=integrated,
                driver=card.uevent.get("DRIVER"),
            )
        )
    return gpus


def _intel_from_sysfs(cards: list[_DrmCard]) -> list[GpuInfo]:
    gpus: list[GpuInfo] = []
    for card in cards:
        if card.vendor != INTEL_PCI_VENDOR:
            continue
        device = card.device or 0
        discrete = device in INTEL_DISCRETE or 0x5690 <= device <= 0x56C1 or 0xE202 <= device <= 0xE212
        if discrete:
            name = INTEL_DISCRETE.get(device, f"Intel Arc GPU 0x{device:04x}")
        else:
            name = INTEL_INTEGRATED_NAMES.get(device, f"Intel Graphics 0x{device:04x}")
        total = card.read_int("mem_info_vram_total") or 0
        gpus.append(
            GpuInfo(
                vendor="intel",
                name=name,
                memory_total_bytes=total,
                integrated=not discrete,
                driver=card.uevent.get("DRIVER"),
            )
        )
    return gpus


def _complete_rocm_gpu(gpu: GpuInfo, node: dict[str, int] | None, cpu_brand: str) -> GpuInfo:
    """Older ROCm prints no "GFX Version": take it from KFD; name an APU after the CPU's "w/ Radeon ..."."""
    update: dict[str, Any] = {}
    if gpu.gfx_target is None and node is not None:
        gfx = gfx_from_target_version(node["gfx_target_version"])
        update["gfx_target"] = gfx
        update["integrated"] = gpu.integrated or _amd_integrated(gfx, node.get("device_id"))
    if gpu.integrated or update.get("integrated"):
        apu_name = _apu_name_from_cpu(cpu_brand)
        if apu_name:
            update["name"] = apu_name
    return gpu.model_copy(update=update) if update else gpu


def _detect_amd(runner: CommandRunner, root: Path, cards: list[_DrmCard] | None, cpu_brand: str) -> list[GpuInfo]:
    has_amd_card = cards is None or any(c.vendor == AMD_PCI_VENDOR for c in cards)
    nodes = _kfd_gpu_nodes(root) if has_amd_card else []
    if has_amd_card:
        out = _run(runner, list(ROCM_SMI_ARGV))
        gpus = parse_rocm_smi(out) if out is not None else []
        if gpus:
            amd_nodes = [n for n in nodes if n.get("vendor_id", AMD_PCI_VENDOR) == AMD_PCI_VENDOR]
            if len(amd_nodes) != len(gpus):
                amd_nodes = []
            return [_complete_rocm_gpu(g, amd_nodes[i] if amd_nodes else None, cpu_brand) for i, g in enumerate(gpus)]
    return _amd_from_sysfs(cards or [], nodes, cpu_brand)


# -- Apple -----------------------------------------------------------------------------------------


def _detect_apple(runner: CommandRunner, cpu: CpuInfo) -> tuple[list[GpuInfo], int | None]:
    """(the Apple GPU if Apple Silicon, ``hw.memsize``)."""
    memsize = _parse_int(_sysctl(runner, "hw.memsize") or "")
    brand = cpu.brand if cpu.brand != "unknown" else _clean(_sysctl(runner, "machdep.cpu.brand_string") or "")
    if not brand.startswith("Apple"):
        return [], memsize
    chip = brand.removeprefix("Apple").strip() or None
    return [
        GpuInfo(vendor="apple", name=brand, memory_total_bytes=memsize or 0, apple_chip=chip, integrated=True)
    ], memsize


# -- entry point -----------------------------------------------------------------------------------


def detect_hardware(
    *,
    runner: CommandRunner | None = None,
    sysfs_root: Path = Path("/"),
    platform_name: str | None = None,
    vm: Callable[[], Any] = psutil.virtual_memory,
    swap: Callable[[], Any] = psutil.swap_memory,
) -> HardwareSnapshot:
    """What this machine is. Never raises for a missing tool or file: that part is just absent.

    ``runner``, ``sysfs_root`` (a file-system root holding ``proc/`` and ``sys/``) and
    ``platform_name`` (``platform.system()`` spelling: "Linux", "Darwin", "Windows") replay a
    recorded machine; ``vm`` and ``swap`` replace ``psutil.virtual_memory``/``swap_memory``.
    ``os`` on the snapshot is the lower-cased platform name ("linux", "darwin", "windows").
    """
    real_system = platform.system()
    system = platform_name or real_system
    local = runner is None and sysfs_root == Path("/") and system == real_system
    run: CommandRunner = runner if runner is not None else run_command
    cpu = _local_cpu(system) if local else _detect_cpu(system, sysfs_root, run, local=False)

    gpus: list[GpuInfo] = []
    unified = False
    memsize: int | None = None
    if system == "Darwin":
        apple, memsize = _detect_apple(run, cpu)
        gpus.extend(apple)
        unified = bool(apple)
    else:
        gpus.extend(_detect_nvidia(run))
        if system == "Linux":
            cards = _drm_cards(sysfs_root)
            gpus.extend(_detect_amd(run, sysfs_root, cards, cpu.brand))
            gpus.extend(_intel_from_sysfs(cards or []))

    meminfo_text = None if local or system != "Linux" else _read_text(sysfs_root / "proc" / "meminfo")
    if meminfo_text:
        info = parse_meminfo(meminfo_text)
        ram_total = info.get("MemTotal", 0)
        ram_available = info.get("MemAvailable", info.get("MemFree", 0))
        swap_total = info.get("SwapTotal", 0)
        swap_used = max(0, swap_total - info.get("SwapFree", swap_total))
    else:
        ram_total, ram_available, swap_total, swap_used = _psutil_memory(vm, swap)
        if memsize:
            ram_total = memsize
            ram_available = min(ram_available, ram_total)

    return HardwareSnapshot(
        os=system.lower(),
        cpu=cpu,
        ram_total_bytes=ram_total,
        ram_available_bytes=ram_available,
        swap_total_bytes=swap_total,
        swap_used_bytes=swap_used,
        gpus=gpus,
        unified_memory=unified,
    )


def _psutil_memory(vm: Callable[[], Any], swap: Callable[[], Any]) -> tuple[int, int, int, int]:
    try:
        mem = vm()
        ram_total, ram_available = int(mem.total), int(mem.available)
    except Exception as exc:
        log.warning("cannot read RAM: %s", exc)
        ram_total = ram_available = 0
    try:
        sw = swap()
        swap_total, swap_used = int(sw.total), int(sw.used)
    except Exception as exc:  # psutil raises on some containers without /proc/vmstat
        log.debug("cannot read swap: %s", exc)
        swap_total = swap_used = 0
    return ram_total, ram_available, swap_total, swap_used


# -- presentation ----------------------------------------------------------------------------------


def human_gib(n: int) -> str:
    """Bytes as GiB: 25769803776 -> "24.0 GiB", 536870912 -> "0.50 GiB"."""
    value = n / GiB
    return f"{value:.2f} GiB" if 0 < value < 1 else f"{value:.1f} GiB"


def snapshot_to_table(snapshot: HardwareSnapshot) -> list[tuple[str, str]]:
    """(label, value) rows describing a snapshot, for the CLI."""
    cpu = snapshot.cpu
    rows: list[tuple[str, str]] = [
        ("OS", snapshot.os),
        ("CPU", cpu.brand),
        ("CPU arch", f"{cpu.arch} ({cpu.vendor})" if cpu.vendor != "unknown" else cpu.arch),
        ("CPU cores", f"{cpu.cores_physical} physical, {cpu.cores_logical} logical"),
        ("RAM", f"{human_gib(snapshot.ram_total_bytes)} total, {human_gib(snapshot.ram_available_bytes)} available"),
        (
            "Swap",
            f"{human_gib(snapshot.swap_total_bytes)} total, {human_gib(snapshot.swap_used_bytes)} used"
            if snapshot.swap_total_bytes
            else "none",
        ),
    ]
    if not snapshot.gpus:
        rows.append(("GPU", "none (CPU only)"))
    for index, gpu in enumerate(snapshot.gpus):
        label = "GPU" if len(snapshot.gpus) == 1 else f"GPU {index}"
        kind = "integrated" if gpu.integrated else "discrete"
        rows.append((label, f"{gpu.name} ({gpu.vendor}, {kind})"))
        if gpu.memory_total_bytes:
            what = "unified" if gpu.vendor == "apple" else "carve-out" if gpu.integrated else "VRAM"
            memory = f"{human_gib(gpu.memory_total_bytes)} {what}"
            free = gpu.memory_free_bytes
            if free is not None:
                memory += f", {human_gib(free)} free"
            rows.append((f"{label} memory", memory))
        details = [
            text
            for text in (
                f"compute capability {gpu.compute_capability}" if gpu.compute_capability else "",
                gpu.gfx_target or "",
                f"chip {gpu.apple_chip}" if gpu.apple_chip else "",
                f"driver {gpu.driver}" if gpu.driver else "",
            )
            if text
        ]
        if details:
            rows.append((f"{label} details", ", ".join(details)))
    rows.append(("Unified memory", "yes" if snapshot.unified_memory else "no"))
    rows.append(("Accelerator memory", human_gib(snapshot.accelerator_memory_bytes)))
    rows.append(("Memory budget", human_gib(snapshot.memory_budget_bytes())))
    return rows
