"""Converters between our profile sets and the Lemonade Auto-Tune working group's profile shape.

Lemonade keys an archetype to recipe options (docs/backend-facts.md#lemonade), e.g.::

    {"strix-halo-128gb": {"llamacpp_backend": "vulkan", "llamacpp_args": "-b 2048 -ub 1024",
                          "ctx_size": 32768, "vllm_args": "--max-num-seqs 8"}}

Only the ``llamacpp`` and ``vllm`` sections have a Lemonade equivalent; ``-ngl`` and ``--ctx-size``
are reserved in ``llamacpp_args`` (the router sets them), so ``n_gpu_layers`` is not exported and
``ctx_size`` is its own key. Unknown flags survive the round trip in ``extra_args``.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from autotune_core.archetypes import SCHEMA_VERSION, ProfileSet, load_profile_set
from autotune_core.hardware import gpu_parts

#: llama-server flag aliases -> our llamacpp field
LLAMA_FLAGS: dict[str, str] = {
    "-b": "batch_size",
    "--batch-size": "batch_size",
    "-ub": "ubatch_size",
    "--ubatch-size": "ubatch_size",
    "-fa": "flash_attn",
    "--flash-attn": "flash_attn",
    "-ctk": "cache_type_k",
    "--cache-type-k": "cache_type_k",
    "-ctv": "cache_type_v",
    "--cache-type-v": "cache_type_v",
    "-t": "threads",
    "--threads": "threads",
    "-np": "parallel",
    "--parallel": "parallel",
    "-ngl": "n_gpu_layers",
    "--n-gpu-layers": "n_gpu_layers",
    "--gpu-layers": "n_gpu_layers",
    "-c": "ctx_size",
    "--ctx-size": "ctx_size",
}
LLAMA_RENDER: tuple[tuple[str, str], ...] = (
    ("batch_size", "-b"),
    ("ubatch_size", "-ub"),
    ("flash_attn", "--flash-attn"),
    ("cache_type_k", "-ctk"),
    ("cache_type_v", "-ctv"),
    ("threads", "-t"),
    ("parallel", "-np"),
)
VLLM_FLAGS: tuple[tuple[str, str], ...] = (
    ("max_model_len", "--max-model-len"),
    ("max_num_seqs", "--max-num-seqs"),
    ("max_num_batched_tokens", "--max-num-batched-tokens"),
    ("gpu_memory_utilization", "--gpu-memory-utilization"),
    ("kv_cache_dtype", "--kv-cache-dtype"),
)
VENDOR_PREFIXES = ("nvidia-", "amd-", "apple-", "intel-", "cpu-")


def _split(args: str | list[str]) -> list[str]:
    return shlex.split(" ".join(args) if isinstance(args, list) else args)


def parse_llamacpp_args(args: str | list[str]) -> dict[str, Any]:
    """``"-b 2048 -ub 1024 --flash-attn on"`` -> llamacpp section fields; the rest in ``extra_args``."""
    tokens = _split(args)
    out: dict[str, Any] = {}
    extra: list[str] = []
    i = 0
    while i < len(tokens):
        flag, _, inline = tokens[i].partition("=")
        field = LLAMA_FLAGS.get(flag)
        if flag in ("-kvu", "--kv-unified", "-no-kvu", "--no-kv-unified"):
            out["kv_unified"] = not flag.startswith(("-no", "--no"))
        elif field is None:
            extra.append(tokens[i])
        else:
            has_value = bool(inline) or (i + 1 < len(tokens) and not tokens[i + 1].startswith("-"))
            value = inline or (tokens[i + 1] if has_value and not inline else "on")
            i += 1 if has_value and not inline else 0
            if field == "flash_attn":
                out[field] = {"on": True, "off": False}.get(value, value)
            else:
                out[field] = int(value) if re.fullmatch(r"-?\d+", value) else value
        i += 1
    if extra:
        out["extra_args"] = shlex.join(extra)
    return out


def render_llamacpp_args(section: dict[str, Any]) -> str:
    parts: list[str] = []
    for field, flag in LLAMA_RENDER:
        if field in section:
            value = section[field]
            parts += [
                flag,
                {True: "on", False: "off"}.get(value, str(value)) if isinstance(value, bool) else str(value),
            ]
    if "kv_unified" in section:
        parts.append("-kvu" if section["kv_unified"] else "-no-kvu")
    return " ".join(parts + ([section["extra_args"]] if section.get("extra_args") else []))


def parse_vllm_args(args: str | list[str]) -> dict[str, Any]:
    tokens = _split(args)
    by_flag = {flag: field for field, flag in VLLM_FLAGS}
    out: dict[str, Any] = {}
    extra: list[str] = []
    i = 0
    while i < len(tokens):
        flag, eq, inline = tokens[i].partition("=")
        if flag in ("--enable-prefix-caching", "--no-enable-prefix-caching"):
            out["enable_prefix_caching"] = flag == "--enable-prefix-caching"
        elif flag in by_flag and (eq or i + 1 < len(tokens)):
            value = inline if eq else tokens[i + 1]
            i += 0 if eq else 1
            field = by_flag[flag]
            out[field] = (
                value
                if field == "kv_cache_dtype"
                else (float(value) if field == "gpu_memory_utilization" else int(value))
            )
        else:
            extra.append(tokens[i])
        i += 1
    if extra:
        out["extra_args"] = shlex.join(extra)
    return out


def render_vllm_args(section: dict[str, Any]) -> str:
    parts = [f"{flag} {section[field]}" for field, flag in VLLM_FLAGS if field in section]
    if "enable_prefix_caching" in section:
        parts.append("--enable-prefix-caching" if section["enable_prefix_caching"] else "--no-enable-prefix-caching")
    return " ".join(parts + ([section["extra_args"]] if section.get("extra_args") else []))


def _plain(section: Any) -> dict[str, Any]:
    return {name: sourced.value for name, sourced in section.values().items()} if section is not None else {}


def _options(scope: Any) -> dict[str, Any]:
    llama, vllm = _plain(scope.llamacpp), _plain(scope.vllm)
    out: dict[str, Any] = {}
    if "backend" in llama:
        out["llamacpp_backend"] = llama["backend"]
    args = render_llamacpp_args(llama)
    if args:
        out["llamacpp_args"] = args
    if "ctx_size" in llama:
        out["ctx_size"] = llama["ctx_size"]
    if vllm:
        out["vllm_args"] = render_vllm_args(vllm)
    return out


def to_lemonade(profile_set: ProfileSet) -> dict[str, dict[str, Any]]:
    """Archetype id (Lemonade's, when known) -> recipe options; overlays under ``model_overlays``."""
    result: dict[str, dict[str, Any]] = {}
    for pid, profile in profile_set.profiles.items():
        options = _options(profile)
        overlays = {o.model: _options(o) for o in profile.overlays if _options(o)}
        if overlays:
            options["model_overlays"] = overlays
        if options:
            result[profile.lemonade_id or pid] = options
    return result


def our_id(lemonade_id: str) -> str:
    """``strix-halo-128gb`` -> ``amd-strix-halo-128gb``; ids that already name a vendor are kept."""
    key = lemonade_id.strip().lower()
    if key.startswith(VENDOR_PREFIXES):
        return key
    amd_families = {fam for arch, fam in gpu_parts.AMD_GFX.values()} | {arch for arch, _ in gpu_parts.AMD_GFX.values()}
    family = re.sub(r"-\d+x?\d*gb.*$", "", key)
    if family in amd_families - {""} or family.startswith("radeon"):
        return f"amd-{key}"
    if re.match(r"m\d+(-(pro|max|ultra))?$", family):
        return f"apple-{key}"
    if family in set(gpu_parts.NVIDIA_CC_FAMILY.values()) | {"blackwell"}:
        return f"nvidia-{key}"
    return key


def _section(options: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    llama: dict[str, Any] = {}
    for key, value in options.items():
        backend_args = re.fullmatch(r"llamacpp_(\w+)_args", key)
        if key == "llamacpp_args" or backend_args:
            llama.update(parse_llamacpp_args(value))
            if backend_args and "backend" not in llama:
                llama["backend"] = backend_args.group(1)
        elif key == "llamacpp_backend":
            llama["backend"] = value
        elif key == "ctx_size" and isinstance(value, int) and value > 0:  # -1 means auto: leave it
            llama["ctx_size"] = value
        elif key == "vllm_args":
            out["vllm"] = parse_vllm_args(value)
    if llama:
        out["llamacpp"] = llama
    return out


def from_lemonade(
    data: dict[str, dict[str, Any]],
    *,
    name: str = "lemonade-import",
    version: int = 1,
    source: str = "imported from a Lemonade auto-tune profile",
) -> ProfileSet:
    """Lemonade profiles -> a validated :class:`ProfileSet` (the original id kept as ``lemonade_id``)."""
    profiles: dict[str, Any] = {}
    for key, options in data.items():
        pid = our_id(key)
        profile = _section(options)
        if pid != key:
            profile["lemonade_id"] = key
        overlays = options.get("model_overlays") or {}
        profile["overlays"] = [{"model": pattern, **_section(opts)} for pattern, opts in overlays.items()]
        profiles[pid] = profile
    return load_profile_set(
        {"schema_version": SCHEMA_VERSION, "name": name, "version": version, "source": source, "profiles": profiles},
        origin=name,
    )
