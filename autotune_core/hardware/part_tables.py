"""PCI device ids and CPU part numbers that detection maps to names and kinds (integrated or discrete).

Data only, kept apart from the detection code that reads it; extend a table when a new part ships.
"""

from __future__ import annotations

#: gfx targets of AMD APUs (integrated GPUs sharing system RAM)
AMD_APU_GFX: frozenset[str] = frozenset(
    {
        "gfx801",
        "gfx902",
        "gfx909",
        "gfx90c",
        "gfx1013",
        "gfx1033",
        "gfx1035",
        "gfx1036",
        "gfx1037",
        "gfx1103",
        "gfx1150",
        "gfx1151",
        "gfx1152",
        "gfx1153",
    }
)
#: PCI device ids of AMD APU GPUs, for when the gfx target is unknown
AMD_APU_DEVICES: frozenset[int] = frozenset(
    {
        0x15DD,
        0x15D8,
        0x1636,
        0x1638,
        0x164C,
        0x1681,
        0x164E,
        0x1506,
        0x163F,
        0x15BF,
        0x15C8,
        0x1900,
        0x1901,
        0x150E,
        0x1586,
        0x1114,
    }
)
#: names for AMD PCI device ids that sysfs alone cannot name (no rocm-smi, no product_name)
AMD_DEVICE_NAMES: dict[int, str] = {
    0x1586: "AMD Radeon 8060S Graphics",
    0x150E: "AMD Radeon 890M Graphics",
    0x15BF: "AMD Radeon 780M Graphics",
    0x1900: "AMD Radeon 780M Graphics",
    0x15C8: "AMD Radeon 740M Graphics",
    0x1681: "AMD Radeon 680M",
    0x164E: "AMD Radeon Graphics (Raphael)",
    0x744C: "AMD Radeon RX 7900 XT/7900 XTX",
    0x7448: "AMD Radeon PRO W7900",
    0x747E: "AMD Radeon RX 7800 XT",
    0x7480: "AMD Radeon RX 7600",
    0x73BF: "AMD Radeon RX 6800/6900 XT",
    0x7550: "AMD Radeon RX 9070/9070 XT",
    0x740C: "AMD Instinct MI250X/MI250",
    0x740F: "AMD Instinct MI210",
    0x74A1: "AMD Instinct MI300X",
}
#: parts sharing a PCI device id, told apart by VRAM size (GiB, rounded)
AMD_DEVICE_BY_VRAM: dict[int, dict[int, str]] = {
    0x744C: {24: "AMD Radeon RX 7900 XTX", 20: "AMD Radeon RX 7900 XT", 16: "AMD Radeon RX 7900 GRE"},
}
#: Intel discrete (Arc) PCI device ids -> name; any other Intel GPU is integrated
INTEL_DISCRETE: dict[int, str] = {
    0x56A0: "Intel Arc A770",
    0x56A1: "Intel Arc A750",
    0x56A2: "Intel Arc A580",
    0x56A5: "Intel Arc A380",
    0x56A6: "Intel Arc A310",
    0xE20B: "Intel Arc B580",
    0xE20C: "Intel Arc B570",
}
#: a few common Intel integrated GPUs
INTEL_INTEGRATED_NAMES: dict[int, str] = {
    0x9A49: "Intel Iris Xe Graphics",
    0x9A40: "Intel Iris Xe Graphics",
    0x46A6: "Intel Iris Xe Graphics",
    0x46A8: "Intel Iris Xe Graphics",
    0xA7A0: "Intel Iris Xe Graphics",
    0xA7A1: "Intel Iris Xe Graphics",
    0x7D55: "Intel Arc Graphics",
    0x7DD5: "Intel Arc Graphics",
    0x64A0: "Intel Arc 140V GPU",
    0x4680: "Intel UHD Graphics 770",
    0xA780: "Intel UHD Graphics 770",
    0x3E92: "Intel UHD Graphics 630",
    0x3E9B: "Intel UHD Graphics 630",
    0x9BC5: "Intel UHD Graphics 630",
}
#: ARM CPU implementer codes (/proc/cpuinfo "CPU implementer") -> vendor
ARM_IMPLEMENTERS: dict[int, str] = {
    0x41: "arm",
    0x42: "broadcom",
    0x43: "cavium",
    0x46: "fujitsu",
    0x48: "hisilicon",
    0x4E: "nvidia",
    0x51: "qualcomm",
    0x53: "samsung",
    0x61: "apple",
    0x6D: "microsoft",
    0xC0: "ampere",
}
#: (implementer, part) -> core name
ARM_PARTS: dict[tuple[int, int], str] = {
    (0x41, 0xD03): "Cortex-A53",
    (0x41, 0xD04): "Cortex-A35",
    (0x41, 0xD05): "Cortex-A55",
    (0x41, 0xD07): "Cortex-A57",
    (0x41, 0xD08): "Cortex-A72",
    (0x41, 0xD09): "Cortex-A73",
    (0x41, 0xD0A): "Cortex-A75",
    (0x41, 0xD0B): "Cortex-A76",
    (0x41, 0xD0C): "Neoverse-N1",
    (0x41, 0xD0D): "Cortex-A77",
    (0x41, 0xD40): "Neoverse-V1",
    (0x41, 0xD41): "Cortex-A78",
    (0x41, 0xD44): "Cortex-X1",
    (0x41, 0xD46): "Cortex-A510",
    (0x41, 0xD47): "Cortex-A710",
    (0x41, 0xD48): "Cortex-X2",
    (0x41, 0xD49): "Neoverse-N2",
    (0x41, 0xD4B): "Cortex-A78C",
    (0x41, 0xD4D): "Cortex-A715",
    (0x41, 0xD4E): "Cortex-X3",
    (0x41, 0xD4F): "Neoverse-V2",
    (0x41, 0xD80): "Cortex-A520",
    (0x41, 0xD81): "Cortex-A720",
    (0x41, 0xD82): "Cortex-X4",
    (0x41, 0xD84): "Neoverse-V3",
    (0x41, 0xD85): "Cortex-X925",
    (0x41, 0xD87): "Cortex-A725",
    (0x41, 0xD8E): "Neoverse-N3",
    (0xC0, 0xAC3): "Ampere-1",
    (0xC0, 0xAC4): "Ampere-1a",
    (0x51, 0x001): "Oryon",
}
_X86_VENDORS: dict[str, str] = {
    "GenuineIntel": "intel",
    "AuthenticAMD": "amd",
    "HygonGenuine": "hygon",
    "CentaurHauls": "centaur",
    "Shanghai": "zhaoxin",
}
