"""Hardware detection against recorded outputs of real machines (tests/fixtures/hardware)."""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from autotune_core.hardware import GiB, HardwareSnapshot
from autotune_core.hardware.detect import (
    ROCM_SMI_ARGV,
    detect_hardware,
    gfx_from_target_version,
    parse_meminfo,
    parse_proc_cpuinfo,
    parse_rocm_smi,
    run_command,
    snapshot_to_table,
)

FIXTURES = Path(__file__).parent / "fixtures" / "hardware"
ROOTS = FIXTURES / "roots"
MiB = 1024**2


class FakeRunner:
    """Answers commands from recorded outputs; anything unknown is a missing tool (None)."""

    def __init__(
        self,
        *,
        nvidia: str | None = None,
        nvidia_legacy: str | None = None,
        rocm: str | None = None,
        sysctl: dict[str, str] | None = None,
    ) -> None:
        self.nvidia = nvidia
        self.nvidia_legacy = nvidia_legacy
        self.rocm = rocm
        self.sysctl = sysctl or {}
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str], timeout: float) -> str | None:
        assert timeout == 2.0
        self.calls.append(list(argv))
        tool = argv[0]
        if tool == "nvidia-smi":
            return self.nvidia if "compute_cap" in argv[1] else self.nvidia_legacy
        if tool == "rocm-smi":
            return self.rocm
        if tool == "sysctl" and argv[1] == "-n":
            value = self.sysctl.get(argv[2])
            return None if value is None else value + "\n"
        return None

    def called(self, tool: str) -> bool:
        return any(argv[0] == tool for argv in self.calls)


def load_sysctl(name: str) -> dict[str, str]:
    """A ``sysctl -a``-style recording as {name: value}."""
    out: dict[str, str] = {}
    for line in (FIXTURES / "sysctl" / f"{name}.txt").read_text().splitlines():
        key, _, value = line.partition(": ")
        out[key] = value
    return out


def fake_vm(total: int = 16 * GiB, available: int = 10 * GiB) -> SimpleNamespace:
    return SimpleNamespace(total=total, available=available, percent=100 * (1 - available / total))


def fake_swap(total: int = 2 * GiB, used: int = 0) -> SimpleNamespace:
    return SimpleNamespace(total=total, used=used, percent=100 * used / total if total else 0.0)


def detect(
    runner: FakeRunner,
    root: Path,
    system: str = "Linux",
    *,
    vm: Callable[[], object] = fake_vm,
    swap: Callable[[], object] = fake_swap,
) -> HardwareSnapshot:
    return detect_hardware(runner=runner, sysfs_root=root, platform_name=system, vm=vm, swap=swap)


# -- NVIDIA ----------------------------------------------------------------------------------------

NVIDIA_CASES = [
    ("rtx4090.csv", "NVIDIA GeForce RTX 4090", 24564, 1187, "8.9", "550.54.14", 1),
    ("rtx3060_12gb.csv", "NVIDIA GeForce RTX 3060", 12288, 412, "8.6", "535.183.01", 1),
    ("a100_80gb.csv", "NVIDIA A100-SXM4-80GB", 81920, 4, "8.0", "535.104.05", 1),
    ("h100_x2.csv", "NVIDIA H100 80GB HBM3", 81559, 1, "9.0", "550.90.07", 2),
    ("gtx1080ti_na_cc.csv", "NVIDIA GeForce GTX 1080 Ti", 11264, 312, None, "470.239.06", 1),
]


@pytest.mark.parametrize(("fixture", "name", "total_mib", "used_mib", "cc", "driver", "count"), NVIDIA_CASES)
def test_nvidia_smi(
    tmp_path: Path, fixture: str, name: str, total_mib: int, used_mib: int, cc: str | None, driver: str, count: int
) -> None:
    runner = FakeRunner(nvidia=(FIXTURES / "nvidia-smi" / fixture).read_text())
    snap = detect(runner, tmp_path)
    assert len(snap.gpus) == count
    for gpu in snap.gpus:
        assert gpu.vendor == "nvidia"
        assert gpu.name == name
        assert gpu.memory_total_bytes == total_mib * MiB
        assert gpu.memory_used_bytes == used_mib * MiB
        assert gpu.compute_capability == cc
        assert gpu.driver == driver
        assert gpu.integrated is False
        assert gpu.gfx_target is None
    assert snap.unified_memory is False
    assert snap.accelerator_memory_bytes == total_mib * MiB
    assert snap.primary_gpu is not None and snap.primary_gpu.name == name


def test_nvidia_old_driver_without_compute_cap_field(tmp_path: Path) -> None:
    # drivers before 510 reject the compute_cap field (exit code 2): the query is retried without it
    runner = FakeRunner(nvidia=None, nvidia_legacy="NVIDIA GeForce GTX 1080 Ti, 11264, 312, 470.239.06\n")
    snap = detect(runner, tmp_path)
    [gpu] = snap.gpus
    assert gpu.name == "NVIDIA GeForce GTX 1080 Ti"
    assert gpu.memory_total_bytes == 11264 * MiB
    assert gpu.compute_capability is None
    assert gpu.driver == "470.239.06"


def test_nvidia_unified_memory_part_reports_no_memory(tmp_path: Path) -> None:
    # DGX Spark: the GB10 shares LPDDR5X with the CPU, nvidia-smi has no memory figures
    snap = detect(
        FakeRunner(nvidia="NVIDIA GB10, [N/A], [N/A], 12.1, 580.95.05\n"),
        tmp_path,
        vm=lambda: fake_vm(total=119 * GiB, available=100 * GiB),
    )
    [gpu] = snap.gpus
    assert (gpu.name, gpu.compute_capability, gpu.memory_total_bytes, gpu.memory_used_bytes) == (
        "NVIDIA GB10",
        "12.1",
        0,
        None,
    )
    assert gpu.integrated is True
    assert snap.accelerator_memory_bytes == 119 * GiB


def test_nvidia_no_devices_and_missing_tool(tmp_path: Path) -> None:
    runner = FakeRunner(nvidia=(FIXTURES / "nvidia-smi" / "no_devices.txt").read_text())
    assert detect(runner, tmp_path).gpus == []
    assert detect(FakeRunner(), tmp_path).gpus == []


# -- AMD -------------------------------------------------------------------------------------------


def test_rocm_smi_rx7900xtx(tmp_path: Path) -> None:
    runner = FakeRunner(rocm=(FIXTURES / "rocm-smi" / "rx7900xtx.json").read_text())
    snap = detect(runner, tmp_path)
    assert [list(ROCM_SMI_ARGV)] == [a for a in runner.calls if a[0] == "rocm-smi"]
    [gpu] = snap.gpus
    assert gpu.vendor == "amd"
    assert gpu.name == "AMD Radeon RX 7900 XTX"
    assert gpu.memory_total_bytes == 25753026560
    assert gpu.memory_used_bytes == 1109766144
    assert gpu.gfx_target == "gfx1100"
    assert gpu.integrated is False
    assert snap.accelerator_memory_bytes == 25753026560


def test_rocm_smi_separate_outputs_merge() -> None:
    product = (FIXTURES / "rocm-smi" / "rx7900xtx_showproductname.json").read_text()
    memory = (FIXTURES / "rocm-smi" / "rx7900xtx_showmeminfo_vram.json").read_text()
    [gpu] = parse_rocm_smi(product, memory)
    assert (gpu.name, gpu.memory_total_bytes, gpu.gfx_target) == ("AMD Radeon RX 7900 XTX", 25753026560, "gfx1100")


def test_rocm_smi_tolerates_warnings_and_garbage() -> None:
    text = (
        "WARNING: AMD GPU device(s) is/are in a low-power state. Check power control/runtime_status\n\n"
        + (FIXTURES / "rocm-smi" / "rx7900xtx.json").read_text()
    )
    assert parse_rocm_smi(text)[0].gfx_target == "gfx1100"
    assert parse_rocm_smi("ERROR: No AMD GPUs specified") == []
    assert parse_rocm_smi("{not json") == []
    assert parse_rocm_smi('{"system": {"Driver version": "6.8.0"}}') == []


def test_strix_halo_from_sysfs() -> None:
    runner = FakeRunner()  # no rocm-smi installed
    snap = detect(runner, ROOTS / "strix_halo_128gb")
    assert runner.called("rocm-smi")  # there is an AMD card, so rocm-smi was worth asking
    [gpu] = snap.gpus
    assert gpu.vendor == "amd"
    assert gpu.name == "AMD Radeon 8060S"
    assert gpu.gfx_target == "gfx1151"
    assert gpu.integrated is True
    assert gpu.memory_total_bytes == 512 * MiB  # the BIOS carve-out
    assert gpu.memory_used_bytes == 260591616
    assert gpu.driver == "amdgpu"
    assert snap.cpu.brand == "AMD RYZEN AI MAX+ 395 w/ Radeon 8060S"
    assert (snap.cpu.vendor, snap.cpu.arch) == ("amd", "x86_64")
    assert (snap.cpu.cores_physical, snap.cpu.cores_logical) == (16, 32)
    assert "avx512f" in snap.cpu.flags
    assert snap.ram_total_bytes == 133_205_644 * 1024
    assert 127 * GiB < snap.ram_total_bytes + gpu.memory_total_bytes <= 128 * GiB
    assert snap.ram_available_bytes == 126_353_096 * 1024
    assert (snap.swap_total_bytes, snap.swap_used_bytes) == (8_388_604 * 1024, 0)
    assert snap.unified_memory is False
    assert snap.accelerator_memory_bytes == snap.ram_total_bytes  # integrated: RAM is what the model gets


def test_ryzen_7840u_780m_from_sysfs() -> None:
    snap = detect(FakeRunner(), ROOTS / "ryzen_7840u_780m")
    [gpu] = snap.gpus
    assert (gpu.vendor, gpu.name, gpu.gfx_target) == ("amd", "AMD Radeon 780M Graphics", "gfx1103")
    assert gpu.integrated is True
    assert gpu.memory_total_bytes == 512 * MiB
    assert snap.cpu.brand == "AMD Ryzen 7 7840U w/ Radeon 780M Graphics"  # the kernel's double space squeezed
    assert (snap.cpu.cores_physical, snap.cpu.cores_logical) == (8, 16)
    assert snap.swap_used_bytes == (8_388_604 - 8_101_116) * 1024


def test_apu_with_rocm_smi_is_integrated_and_named_after_the_cpu() -> None:
    rocm = json.dumps(
        {
            "card0": {
                "Card Series": "Strix Halo [Radeon Graphics / Radeon 8050S Graphics / Radeon 8060S Graphics]",
                "Card Model": "0x1586",
                "Card Vendor": "Advanced Micro Devices, Inc. [AMD/ATI]",
                "Card SKU": "STRXLGEN",
                "GFX Version": "gfx1151",
                "Unique ID": "N/A",
                "VRAM Total Memory (B)": "536870912",
                "VRAM Total Used Memory (B)": "260591616",
            }
        }
    )
    [gpu] = detect(FakeRunner(rocm=rocm), ROOTS / "strix_halo_128gb").gpus
    assert (gpu.name, gpu.gfx_target, gpu.integrated) == ("AMD Radeon 8060S", "gfx1151", True)


def test_old_rocm_without_gfx_version_takes_it_from_kfd() -> None:
    rocm = json.dumps(
        {
            "card0": {
                "Card series": "Phoenix1",
                "Card model": "0x15bf",
                "Card vendor": "Advanced Micro Devices, Inc. [AMD/ATI]",
                "Card SKU": "PHXGENERIC",
                "VRAM Total Memory (B)": "536870912",
                "VRAM Total Used Memory (B)": "455094272",
            }
        }
    )
    [gpu] = detect(FakeRunner(rocm=rocm), ROOTS / "ryzen_7840u_780m").gpus
    assert (gpu.gfx_target, gpu.integrated, gpu.name) == ("gfx1103", True, "AMD Radeon 780M Graphics")


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_discrete_amd_from_a_temp_sysfs_tree(tmp_path: Path) -> None:
    dev = tmp_path / "sys/class/drm/card0/device"
    _write(dev / "vendor", "0x1002\n")
    _write(dev / "device", "0x744c\n")
    _write(dev / "uevent", "DRIVER=amdgpu\nPCI_ID=1002:744C\nPCI_SLOT_NAME=0000:03:00.0\n")
    _write(dev / "mem_info_vram_total", "25753026560\n")
    _write(dev / "mem_info_vram_used", "1109766144\n")
    _write(tmp_path / "sys/class/drm/card0-DP-1/status", "connected\n")
    nodes = tmp_path / "sys/class/kfd/kfd/topology/nodes"
    _write(nodes / "0/properties", "cpu_cores_count 16\ngfx_target_version 0\n")
    _write(
        nodes / "1/properties",
        "cpu_cores_count 0\ngfx_target_version 110000\nvendor_id 4098\ndevice_id 29772\nlocation_id 768\ndomain 0\n",
    )
    [gpu] = detect(FakeRunner(), tmp_path).gpus
    assert (gpu.name, gpu.gfx_target, gpu.integrated) == ("AMD Radeon RX 7900 XTX", "gfx1100", False)
    assert gpu.memory_total_bytes == 25753026560
    assert gpu.memory_free_bytes == 25753026560 - 1109766144


def test_broken_sysfs_files_do_not_raise(tmp_path: Path) -> None:
    dev = tmp_path / "sys/class/drm/card0/device"
    _write(dev / "vendor", "0x1002\n")
    _write(dev / "mem_info_vram_total", "garbage\n")
    _write(tmp_path / "sys/class/kfd/kfd/topology/nodes/1/properties", "nonsense\n")
    [gpu] = detect(FakeRunner(), tmp_path).gpus
    assert gpu.vendor == "amd" and gpu.memory_total_bytes == 0 and gpu.gfx_target is None


@pytest.mark.parametrize(
    ("version", "target"),
    [
        (110501, "gfx1151"),
        (110003, "gfx1103"),
        (110000, "gfx1100"),
        (110500, "gfx1150"),
        (120001, "gfx1201"),
        (90010, "gfx90a"),
        (90402, "gfx942"),
        (90012, "gfx90c"),
        (0, None),
    ],
)
def test_gfx_from_target_version(version: int, target: str | None) -> None:
    assert gfx_from_target_version(version) == target


# -- Intel -----------------------------------------------------------------------------------------


def test_intel_iris_xe_from_sysfs() -> None:
    runner = FakeRunner()
    snap = detect(runner, ROOTS / "intel_iris_xe")
    assert not runner.called("rocm-smi")  # DRM lists no AMD card: no need to start rocm-smi
    [gpu] = snap.gpus
    assert (gpu.vendor, gpu.name, gpu.integrated, gpu.driver) == ("intel", "Intel Iris Xe Graphics", True, "i915")
    assert snap.accelerator_memory_bytes == snap.ram_total_bytes


# -- Apple -----------------------------------------------------------------------------------------

APPLE_CASES = [
    ("m1_8gb", "Apple M1", "M1", 8, 8),
    ("m2_pro_16gb", "Apple M2 Pro", "M2 Pro", 16, 12),
    ("m3_max_64gb", "Apple M3 Max", "M3 Max", 64, 16),
    ("m4_max_128gb", "Apple M4 Max", "M4 Max", 128, 16),
]


@pytest.mark.parametrize(("fixture", "brand", "chip", "gib", "cores"), APPLE_CASES)
def test_apple_silicon(tmp_path: Path, fixture: str, brand: str, chip: str, gib: int, cores: int) -> None:
    runner = FakeRunner(sysctl=load_sysctl(fixture))
    snap = detect(runner, tmp_path, "Darwin", vm=lambda: fake_vm(total=gib * GiB, available=gib * GiB // 2))
    assert not runner.called("nvidia-smi") and not runner.called("rocm-smi")
    assert snap.os == "darwin"
    assert (snap.cpu.brand, snap.cpu.vendor, snap.cpu.arch) == (brand, "apple", "arm64")
    assert (snap.cpu.cores_physical, snap.cpu.cores_logical) == (cores, cores)
    [gpu] = snap.gpus
    assert (gpu.vendor, gpu.name, gpu.apple_chip) == ("apple", brand, chip)
    assert gpu.integrated is True
    assert gpu.memory_total_bytes == gib * GiB
    assert snap.unified_memory is True
    assert snap.ram_total_bytes == gib * GiB
    assert snap.ram_available_bytes == gib * GiB // 2
    assert snap.accelerator_memory_bytes == gib * GiB


def test_intel_mac_has_no_apple_gpu(tmp_path: Path) -> None:
    sysctl = {
        "machdep.cpu.brand_string": "Intel(R) Core(TM) i9-9880H CPU @ 2.30GHz",
        "hw.memsize": str(16 * GiB),
        "hw.machine": "x86_64",
        "hw.physicalcpu": "8",
        "hw.logicalcpu": "16",
        "machdep.cpu.features": "FPU VME DE PSE TSC MSR PAE MCE CX8 APIC SEP MTRR SSE4.2 AVX1.0",
    }
    snap = detect(FakeRunner(sysctl=sysctl), tmp_path, "Darwin")
    assert snap.gpus == [] and snap.unified_memory is False
    assert (snap.cpu.vendor, snap.cpu.arch, snap.cpu.cores_logical) == ("intel", "x86_64", 16)
    assert "avx1.0" in snap.cpu.flags


# -- CPU-only boxes --------------------------------------------------------------------------------


def test_x86_cpu_only_box() -> None:
    snap = detect(FakeRunner(), ROOTS / "x86_cpu_only")
    assert snap.gpus == [] and snap.primary_gpu is None
    cpu = snap.cpu
    assert cpu.brand == "Intel(R) Core(TM) i7-7700K CPU @ 4.20GHz"
    assert (cpu.vendor, cpu.arch, cpu.cores_physical, cpu.cores_logical) == ("intel", "x86_64", 4, 8)
    assert {"avx2", "fma", "f16c"} <= set(cpu.flags)
    assert snap.ram_total_bytes == 32_803_672 * 1024
    assert snap.swap_total_bytes == 2_097_148 * 1024
    assert snap.accelerator_memory_bytes == snap.ram_total_bytes


def test_aarch64_box() -> None:
    snap = detect(FakeRunner(), ROOTS / "aarch64_graviton3")
    cpu = snap.cpu
    assert (cpu.brand, cpu.vendor, cpu.arch) == ("ARM Neoverse-V1", "arm", "aarch64")
    assert (cpu.cores_physical, cpu.cores_logical) == (4, 4)
    assert {"asimd", "sve", "bf16", "i8mm"} <= set(cpu.flags)
    assert snap.ram_total_bytes == 7_945_428 * 1024
    assert snap.swap_total_bytes == 0
    assert snap.gpus == []


def test_big_little_arm_cpuinfo() -> None:
    blocks = []
    for i in range(8):
        part = "0xd05" if i < 4 else "0xd0b"
        blocks.append(
            f"processor\t: {i}\nBogoMIPS\t: 48.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32\n"
            f"CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x2\nCPU part\t: {part}\n"
            "CPU revision\t: 0\n"
        )
    cpu = parse_proc_cpuinfo("\n".join(blocks))
    assert cpu.brand == "ARM Cortex-A55 + Cortex-A76"
    assert (cpu.arch, cpu.cores_logical) == ("aarch64", 8)


def test_parse_meminfo() -> None:
    info = parse_meminfo("MemTotal:       24684084 kB\nHugePages_Total:       0\nbroken line\n")
    assert info == {"MemTotal": 24684084 * 1024, "HugePages_Total": 0}


# -- robustness and the real machine ---------------------------------------------------------------


def test_a_raising_runner_never_breaks_detection(tmp_path: Path) -> None:
    def boom(argv: list[str], timeout: float) -> str | None:
        raise RuntimeError("no")

    snap = detect_hardware(runner=boom, sysfs_root=tmp_path, platform_name="Linux", vm=fake_vm, swap=fake_swap)
    assert snap.gpus == [] and snap.ram_total_bytes == 16 * GiB


def test_run_command() -> None:
    assert run_command(["definitely-not-a-real-tool-xyz"]) is None
    assert run_command([sys.executable, "-c", "print('hi')"]) == "hi\n"
    assert run_command([sys.executable, "-c", "import sys; sys.exit(3)"]) is None
    started = time.monotonic()
    assert run_command([sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.3) is None
    assert time.monotonic() - started < 3


def test_detect_on_this_machine() -> None:
    snap = detect_hardware()
    assert snap.os == platform.system().lower()
    assert snap.ram_total_bytes > 256 * MiB
    assert 0 < snap.ram_available_bytes <= snap.ram_total_bytes
    assert snap.cpu.cores_logical >= snap.cpu.cores_physical >= 1
    assert snap.cpu.arch != "unknown"
    started = time.perf_counter()
    again = detect_hardware()  # the CPU part is cached per process
    assert again.cpu == snap.cpu
    if not snap.gpus:  # GPU tools (nvidia-smi ...) take their own time when present
        assert time.perf_counter() - started < 0.25


def test_fast_path_without_tools_on_this_machine() -> None:
    started = time.perf_counter()
    snap = detect_hardware(runner=lambda argv, timeout: None)
    assert time.perf_counter() - started < 0.25
    assert snap.ram_total_bytes > 256 * MiB


# -- table -----------------------------------------------------------------------------------------


def test_snapshot_to_table(tmp_path: Path) -> None:
    snap = detect(FakeRunner(nvidia=(FIXTURES / "nvidia-smi" / "rtx4090.csv").read_text()), tmp_path)
    rows = dict(snapshot_to_table(snap))
    assert rows["GPU"] == "NVIDIA GeForce RTX 4090 (nvidia, discrete)"
    assert rows["GPU memory"] == "24.0 GiB VRAM, 22.8 GiB free"
    assert rows["GPU details"] == "compute capability 8.9, driver 550.54.14"
    assert rows["RAM"] == "16.0 GiB total, 10.0 GiB available"
    assert rows["Accelerator memory"] == "24.0 GiB"

    h100 = dict(
        snapshot_to_table(detect(FakeRunner(nvidia=(FIXTURES / "nvidia-smi" / "h100_x2.csv").read_text()), tmp_path))
    )
    assert "GPU 0" in h100 and "GPU 1 memory" in h100

    cpu_only = dict(snapshot_to_table(detect(FakeRunner(), ROOTS / "x86_cpu_only")))
    assert cpu_only["GPU"] == "none (CPU only)"
    assert cpu_only["CPU cores"] == "4 physical, 8 logical"
    assert cpu_only["Swap"] == "2.0 GiB total, 0.0 GiB used"

    halo = dict(snapshot_to_table(detect(FakeRunner(), ROOTS / "strix_halo_128gb")))
    assert halo["GPU memory"].startswith("0.50 GiB carve-out")
    assert "gfx1151" in halo["GPU details"]

    mac = dict(snapshot_to_table(detect(FakeRunner(sysctl=load_sysctl("m2_pro_16gb")), tmp_path, "Darwin")))
    assert mac["Unified memory"] == "yes"
    assert mac["GPU memory"] == "16.0 GiB unified"
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in snapshot_to_table(snap))
