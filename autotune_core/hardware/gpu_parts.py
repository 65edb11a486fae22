"""Known GPU parts: architecture families and memory bandwidth, for archetype classification.

Data only, kept apart from the classifier so a new part is a one-line change. Bandwidths are the
vendors' published peak figures in GB/s (spec sheets); they only pick a coarse tier, so a few
percent of error never changes an archetype. Parts not listed get the tier ``unknown``.
"""

from __future__ import annotations

import re

#: NVIDIA compute capability (major, minor) -> architecture family
NVIDIA_CC_FAMILY: dict[tuple[int, int], str] = {
    (6, 0): "pascal",
    (6, 1): "pascal",
    (6, 2): "pascal",
    (7, 0): "volta",
    (7, 2): "volta",
    (7, 5): "turing",
    (8, 0): "ampere",
    (8, 6): "ampere",
    (8, 7): "ampere",
    (8, 9): "ada",
    (9, 0): "hopper",
}
#: major versions that map to one family whatever the minor (10.0 B200, 12.0 RTX 50, 12.1 GB10)
NVIDIA_MAJOR_FAMILY: dict[int, str] = {10: "blackwell", 11: "blackwell", 12: "blackwell"}

#: NVIDIA name pattern -> family, for when the compute capability is unknown
NVIDIA_NAME_FAMILY: tuple[tuple[str, str], ...] = (
    (r"rtx\s*50\d\d|rtx pro \d000 blackwell|b200|gb10|dgx spark|thor", "blackwell"),
    (r"h100|h200|gh200", "hopper"),
    (r"rtx\s*40\d\d|ada|l40|\bl4\b", "ada"),
    (r"rtx\s*30\d\d|a100|\ba10\b|a40|a[456]000|orin", "ampere"),
    (r"rtx\s*20\d\d|gtx\s*16\d\d|t4\b|titan rtx|quadro rtx", "turing"),
    (r"gtx\s*10\d\d|p100|p40|titan x", "pascal"),
)

#: AMD gfx target prefix -> (architecture, platform family or "" for discrete parts).
#: Longest prefix wins. Integrated parts get their platform codename as family, because
#: Strix Halo and a Radeon 780M share an ISA generation but not a memory system.
AMD_GFX: dict[str, tuple[str, str]] = {
    "gfx900": ("gcn5", ""),
    "gfx906": ("gcn5", ""),
    "gfx90c": ("gcn5", "renoir"),
    "gfx908": ("cdna", ""),
    "gfx90a": ("cdna2", ""),
    "gfx940": ("cdna3", ""),
    "gfx941": ("cdna3", ""),
    "gfx942": ("cdna3", ""),
    "gfx950": ("cdna4", ""),
    "gfx1010": ("rdna1", ""),
    "gfx1011": ("rdna1", ""),
    "gfx1012": ("rdna1", ""),
    "gfx1030": ("rdna2", ""),
    "gfx1031": ("rdna2", ""),
    "gfx1032": ("rdna2", ""),
    "gfx1034": ("rdna2", ""),
    "gfx1035": ("rdna2", "rembrandt"),
    "gfx1036": ("rdna2", "raphael"),
    "gfx1100": ("rdna3", ""),
    "gfx1101": ("rdna3", ""),
    "gfx1102": ("rdna3", ""),
    "gfx1103": ("rdna3", "phoenix"),
    "gfx1150": ("rdna3.5", "strix-point"),
    "gfx1151": ("rdna3.5", "strix-halo"),
    "gfx1152": ("rdna3.5", "krackan"),
    "gfx1200": ("rdna4", ""),
    "gfx1201": ("rdna4", ""),
}

#: AMD marketing names -> gfx target, for machines where only the name is known (sysfs, lspci)
AMD_NAME_GFX: tuple[tuple[str, str], ...] = (
    (r"8060s|8050s|8040s|strix halo|ryzen ai max", "gfx1151"),
    (r"890m|880m|strix point", "gfx1150"),
    (r"860m|840m", "gfx1152"),
    (r"780m|760m|740m|phoenix|hawk point", "gfx1103"),
    (r"680m|660m|rembrandt", "gfx1035"),
    (r"rx 9070|rx 9060", "gfx1201"),
    (r"rx 7900|w7900|w7800", "gfx1100"),
    (r"rx 7800|rx 7700", "gfx1101"),
    (r"rx 7600", "gfx1102"),
    (r"rx 69[05]0|rx 6800", "gfx1030"),
    (r"rx 67[05]0", "gfx1031"),
    (r"rx 66[05]0|rx 6600", "gfx1032"),
    (r"mi300|mi325", "gfx942"),
    (r"mi250|mi210", "gfx90a"),
    (r"mi100", "gfx908"),
    (r"radeon vii|mi50|mi60", "gfx906"),
)

#: name pattern (lower-case regex) -> peak memory bandwidth in GB/s. First match wins, so list
#: the more specific names (e.g. "4060 ti") before the less specific ("4060").
BANDWIDTH_GBPS: tuple[tuple[str, float], ...] = (
    # NVIDIA datacenter
    (r"gb200|b200", 8000),
    (r"h200", 4800),
    (r"h100.*(sxm|hbm3)", 3350),
    (r"h100", 2000),
    (r"a100.*80", 2039),
    (r"a100", 1555),
    (r"l40s|l40", 864),
    (r"a40\b", 696),
    (r"a10\b", 600),
    (r"l4\b", 300),
    (r"t4\b", 320),
    (r"v100", 900),
    (r"gb10|dgx spark", 273),
    (r"jetson agx orin|agx orin", 205),
    (r"orin nano", 102),
    (r"orin nx", 102),
    # NVIDIA workstation
    (r"rtx pro 6000", 1792),
    (r"rtx 6000 ada", 960),
    (r"a6000", 768),
    (r"rtx 5000 ada", 576),
    (r"rtx 4000 ada", 360),
    (r"a5000", 768),
    (r"a4000", 448),
    # NVIDIA GeForce
    (r"5090", 1792),
    (r"5080", 960),
    (r"5070 ti", 896),
    (r"5070", 672),
    (r"5060 ti", 448),
    (r"5060", 448),
    (r"4090", 1008),
    (r"4080", 717),
    (r"4070 ti super", 672),
    (r"4070 ti", 504),
    (r"4070", 504),
    (r"4060 ti", 288),
    (r"4060", 272),
    (r"3090", 936),
    (r"3080 ti", 912),
    (r"3080", 760),
    (r"3070 ti", 608),
    (r"3070", 448),
    (r"3060 ti", 448),
    (r"3060", 360),
    (r"3050", 224),
    (r"2080 ti", 616),
    (r"2080", 448),
    (r"2070", 448),
    (r"2060", 336),
    (r"titan rtx", 672),
    (r"1080 ti", 484),
    (r"1080", 320),
    (r"1070", 256),
    (r"1060", 192),
    # AMD
    (r"mi325", 6000),
    (r"mi300", 5300),
    (r"mi250", 3277),
    (r"mi210", 1638),
    (r"mi100", 1229),
    (r"rx 7900 xtx|w7900", 960),
    (r"rx 7900 xt\b", 800),
    (r"rx 7900 gre", 576),
    (r"rx 7800", 624),
    (r"rx 7700", 432),
    (r"rx 7600", 288),
    (r"rx 9070", 640),
    (r"rx 9060", 320),
    (r"rx 6950|rx 6900|rx 6800", 512),
    (r"rx 6700", 384),
    (r"rx 6600", 224),
    (r"8060s|strix halo|ryzen ai max", 256),
    (r"890m|880m", 120),
    (r"780m|760m|740m", 90),
    (r"680m|660m", 77),
    # Intel
    (r"b580", 456),
    (r"b570", 380),
    (r"a770", 560),
    (r"a750", 512),
    (r"a580", 512),
    (r"a380", 186),
    (r"arc.*(140v|130v)|lunar lake", 136),
    (r"iris xe|uhd graphics|arc graphics", 90),
)

#: Apple chip (lower-case, e.g. "m3 max") -> unified-memory bandwidth in GB/s (Apple spec sheets;
#: the binned M3 Max/M4 Max have less, which the tier absorbs)
APPLE_BANDWIDTH_GBPS: dict[str, float] = {
    "m1": 68,
    "m1 pro": 200,
    "m1 max": 400,
    "m1 ultra": 800,
    "m2": 100,
    "m2 pro": 200,
    "m2 max": 400,
    "m2 ultra": 800,
    "m3": 100,
    "m3 pro": 150,
    "m3 max": 400,
    "m3 ultra": 819,
    "m4": 120,
    "m4 pro": 273,
    "m4 max": 546,
    "m5": 153,
}

#: bandwidth tier upper bounds in GB/s (exclusive), in order
BANDWIDTH_TIERS: tuple[tuple[str, float], ...] = (
    ("low", 150.0),
    ("medium", 400.0),
    ("high", 1200.0),
    ("extreme", float("inf")),
)

#: memory buckets in GB; capacities round to the nearest (ties round down: never promise more)
MEMORY_BUCKETS_GB: tuple[int, ...] = (4, 6, 8, 12, 16, 24, 32, 48, 64, 80, 96, 128, 192, 256, 512)


def nvidia_family(compute_capability: str | None) -> str | None:
    """``"8.9"`` -> ``"ada"``; None when unknown or unparsable."""
    if not compute_capability:
        return None
    match = re.match(r"\s*(\d+)\.(\d+)", compute_capability)
    if match is None:
        return None
    major, minor = int(match.group(1)), int(match.group(2))
    return NVIDIA_CC_FAMILY.get((major, minor)) or NVIDIA_MAJOR_FAMILY.get(major)


def nvidia_family_by_name(name: str) -> str:
    lowered = name.lower()
    return next((family for pattern, family in NVIDIA_NAME_FAMILY if re.search(pattern, lowered)), "unknown")


def intel_family(name: str) -> str:
    """Arc B-series -> battlemage, A-series -> alchemist, anything else (iGPUs) -> xe."""
    lowered = name.lower()
    if re.search(r"\bb\d{3}\b", lowered):
        return "battlemage"
    return "alchemist" if re.search(r"\ba\d{3}m?\b", lowered) else "xe"


def amd_gfx(gfx_target: str | None, name: str) -> tuple[str, str] | None:
    """(architecture, platform family) from a gfx target, else from the marketing name."""
    target = (gfx_target or "").strip().lower().split(":")[0]
    if not target:
        lowered = name.lower()
        target = next((gfx for pattern, gfx in AMD_NAME_GFX if re.search(pattern, lowered)), "")
    for length in range(len(target), 3, -1):
        hit = AMD_GFX.get(target[:length])
        if hit is not None:
            return hit
    return None


def bandwidth_gbps(name: str) -> float | None:
    """Peak bandwidth of a known part by its name, else None."""
    lowered = name.lower()
    for pattern, value in BANDWIDTH_GBPS:
        if re.search(pattern, lowered):
            return value
    return None


def bandwidth_tier(gbps: float | None) -> str:
    if gbps is None:
        return "unknown"
    return next(tier for tier, bound in BANDWIDTH_TIERS if gbps < bound)


def memory_bucket_gb(total_bytes: int) -> int:
    """Round a capacity to the nearest standard size (ties down); 0 bytes -> smallest bucket."""
    gb = total_bytes / 1024**3
    best = MEMORY_BUCKETS_GB[0]
    for bucket in MEMORY_BUCKETS_GB:
        if abs(bucket - gb) < abs(best - gb):
            best = bucket
    return best
