"""Hardware archetypes: the contract plugins share through ``register_archetypes``.

Three parts, all pure (no I/O) so hooks and ``autotune hardware`` can use them freely:

- :func:`classify` turns a :class:`HardwareSnapshot` into a stable :class:`Archetype` id such as
  ``nvidia-ada-24gb`` (GPU family + memory bucket, with the bandwidth tier and unified/discrete
  memory as attributes), following the Lemonade Auto-Tune working group's definition.
- :class:`ProfileSet` is the versioned, validated profile schema: archetype → per-backend
  performance parameters (never sampling), optional per-model overlays, and a source for every value.
- :func:`resolve` is the fallback chain: model overlay → archetype defaults → (nothing: backend
  defaults), with the highest-priority set winning per knob and the losers recorded.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError
from .hardware import HardwareSnapshot, gpu_parts

SCHEMA_VERSION = 1
T = TypeVar("T")

# -- classification ------------------------------------------------------------------------------


class Archetype(BaseModel):
    """A bounded hardware class: two machines with the same id get the same recommendations."""

    id: str
    vendor: str  # nvidia | amd | apple | intel | cpu
    family: str
    architecture: str
    memory_gb: int
    bandwidth_gbps: float | None = None
    bandwidth_tier: str = "unknown"
    unified: bool = False
    gpu_name: str | None = None
    gpu_count: int = 0
    cpu_arch: str = "unknown"

    def lookup_keys(self) -> list[str]:
        """Profile keys to look up, most specific first (the id with its bandwidth tier, then the id)."""
        return ([f"{self.id}-bw-{self.bandwidth_tier}"] if self.bandwidth_tier != "unknown" else []) + [self.id]


def _cpu_arch(snapshot: HardwareSnapshot) -> str:
    arch = snapshot.cpu.arch.lower()
    if arch in ("x86_64", "amd64", "x86", "i686", "x86_32", "x86-64"):
        return "x86"
    if arch in ("arm64", "aarch64", "arm_8", "armv8", "arm"):
        return "arm64"
    return re.sub(r"[^a-z0-9]+", "", arch) or "unknown"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-") or "unknown"


def classify(snapshot: HardwareSnapshot) -> Archetype:
    """The archetype of a machine. Pure and deterministic: same snapshot, same id."""
    cpu_arch = _cpu_arch(snapshot)
    gpu = snapshot.primary_gpu
    brand = snapshot.cpu.brand
    apple_chip = (gpu.apple_chip if gpu is not None and gpu.vendor == "apple" else None) or (
        brand if snapshot.os == "darwin" or "apple" in brand.lower() else None
    )
    chip = re.search(r"\bm(\d+)(?:\s+(pro|max|ultra))?\b", apple_chip.lower()) if apple_chip else None
    if chip is not None and cpu_arch == "arm64":
        gen = f"m{chip.group(1)}" + (f" {chip.group(2)}" if chip.group(2) else "")
        gbps = gpu_parts.APPLE_BANDWIDTH_GBPS.get(gen)
        return _make(
            "apple",
            _slug(gen),
            f"apple-m{chip.group(1)}",
            snapshot.ram_total_bytes,
            gbps,
            True,
            f"Apple {gen.title()}",
            1,
            cpu_arch,
        )
    if gpu is None or gpu.vendor == "other":
        return _make("cpu", cpu_arch, cpu_arch, snapshot.ram_total_bytes, None, False, None, 0, cpu_arch)
    same = [g for g in snapshot.gpus if g.name == gpu.name and g.integrated == gpu.integrated]
    unified = gpu.integrated or snapshot.unified_memory
    # integrated GPUs use system RAM plus any BIOS carve-out (which the OS no longer counts as RAM)
    memory = snapshot.ram_total_bytes + gpu.memory_total_bytes if unified else gpu.memory_total_bytes
    gbps = gpu_parts.bandwidth_gbps(gpu.name)
    if gpu.vendor == "nvidia":
        family = gpu_parts.nvidia_family(gpu.compute_capability) or gpu_parts.nvidia_family_by_name(gpu.name)
        return _make("nvidia", family, family, memory, gbps, unified, gpu.name, len(same), cpu_arch)
    if gpu.vendor == "amd":
        arch, platform = gpu_parts.amd_gfx(gpu.gfx_target, gpu.name) or ("unknown", "")
        unified = unified or bool(platform)
        if unified and not (gpu.integrated or snapshot.unified_memory):
            memory = snapshot.ram_total_bytes + gpu.memory_total_bytes
        return _make(
            "amd", platform or arch, arch, memory, gbps, unified, gpu.name, 1 if unified else len(same), cpu_arch
        )
    if gpu.vendor == "intel":
        family = gpu_parts.intel_family(gpu.name)
        unified = unified or family == "xe"
        if unified and not (gpu.integrated or snapshot.unified_memory):
            memory = snapshot.ram_total_bytes + gpu.memory_total_bytes
        return _make("intel", family, family, memory, gbps, unified, gpu.name, 1 if unified else len(same), cpu_arch)
    # an Apple GPU reported without a recognisable chip name
    return _make("apple", "unknown", "apple", snapshot.ram_total_bytes, None, True, gpu.name, 1, cpu_arch)


def _make(
    vendor: str,
    family: str,
    architecture: str,
    memory_bytes: int,
    gbps: float | None,
    unified: bool,
    gpu_name: str | None,
    gpu_count: int,
    cpu_arch: str,
) -> Archetype:
    bucket = gpu_parts.memory_bucket_gb(memory_bytes)
    count = f"{gpu_count}x" if gpu_count > 1 and not unified else ""
    return Archetype(
        id=f"{vendor}-{family}-{count}{bucket}gb",
        vendor=vendor,
        family=family,
        architecture=architecture,
        memory_gb=bucket,
        bandwidth_gbps=gbps,
        bandwidth_tier=gpu_parts.bandwidth_tier(gbps),
        unified=unified,
        gpu_name=gpu_name,
        gpu_count=gpu_count,
        cpu_arch=cpu_arch,
    )


# -- profile schema ------------------------------------------------------------------------------


class Sourced(BaseModel, Generic[T]):
    """A value and where it came from. A bare value is accepted; its source is then inherited."""

    model_config = ConfigDict(extra="forbid")

    value: T
    source: str = ""

    @model_validator(mode="before")
    @classmethod
    def _bare(cls, data: Any) -> Any:
        return data if isinstance(data, dict) else {"value": data}


Pos = Annotated[int, Field(ge=1, le=1 << 20)]
Ctx = Annotated[int, Field(ge=256, le=1 << 22)]
Layers = Annotated[int, Field(ge=-1, le=1000)]
KvType = Literal["f32", "f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl"]
Flash = bool | Literal["auto"]
#: keys that are sampling (quality) parameters: out of scope for archetype profiles
SAMPLING_KEYS = frozenset(
    {
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "typical_p",
        "repeat_penalty",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "mirostat",
        "repeat_last_n",
        "stop",
    }
)


class Section(BaseModel):
    """Parameters for one backend. ``PLAN_KNOBS`` maps fields onto :class:`Plan` knobs; the others
    (threads, GPU layers, ubatch, backend choice) travel in ``plan.flags["archetype"]``."""

    model_config = ConfigDict(extra="forbid")
    PLAN_KNOBS: ClassVar[dict[str, str]] = {}

    #: default source of this section's values
    source: str = ""

    @model_validator(mode="before")
    @classmethod
    def _no_sampling(cls, data: Any) -> Any:
        if isinstance(data, dict) and (bad := sorted(SAMPLING_KEYS & set(data))):
            raise ValueError(f"sampling parameters are out of scope for archetype profiles: {', '.join(bad)}")
        return data

    def values(self) -> dict[str, Sourced[Any]]:
        return {
            name: value
            for name in type(self).model_fields
            if name != "source" and isinstance(value := getattr(self, name), Sourced)
        }


class CommonParams(Section):
    """Backend-agnostic knobs, used for any backend (after its own section)."""

    PLAN_KNOBS = {
        "num_ctx": "num_ctx",
        "max_num_ctx": "max_num_ctx",
        "kv_type": "kv_type",
        "flash_attn": "flash_attn",
        "num_batch": "num_batch",
        "parallel": "parallel",
    }
    num_ctx: Sourced[Ctx] | None = None
    #: a ceiling applied in the adjust stage: never propose more context than this hardware handles well
    max_num_ctx: Sourced[Ctx] | None = None
    kv_type: Sourced[KvType] | None = None
    flash_attn: Sourced[Flash] | None = None
    num_batch: Sourced[Pos] | None = None
    parallel: Sourced[Pos] | None = None


class LlamaCppParams(Section):
    """llama-server start flags (and Lemonade's ``llamacpp_backend``/``llamacpp_args``)."""

    PLAN_KNOBS = {
        "ctx_size": "num_ctx",
        "batch_size": "num_batch",
        "flash_attn": "flash_attn",
        "cache_type_k": "kv_type",
        "parallel": "parallel",
    }
    backend: Sourced[Literal["vulkan", "rocm", "cuda", "metal", "cpu", "sycl", "system"]] | None = None
    ctx_size: Sourced[Ctx] | None = None
    batch_size: Sourced[Pos] | None = None
    ubatch_size: Sourced[Pos] | None = None
    flash_attn: Sourced[Flash] | None = None
    cache_type_k: Sourced[KvType] | None = None
    cache_type_v: Sourced[KvType] | None = None
    threads: Sourced[Pos] | None = None
    n_gpu_layers: Sourced[Layers] | None = None
    parallel: Sourced[Pos] | None = None
    kv_unified: Sourced[bool] | None = None
    extra_args: Sourced[str] | None = None


class OllamaParams(Section):
    """Ollama ``options`` (num_*) and server environment (``OLLAMA_*``, given as advice)."""

    PLAN_KNOBS = {
        "num_ctx": "num_ctx",
        "num_batch": "num_batch",
        "flash_attention": "flash_attn",
        "kv_cache_type": "kv_type",
        "num_parallel": "parallel",
    }
    num_ctx: Sourced[Ctx] | None = None
    num_batch: Sourced[Pos] | None = None
    num_thread: Sourced[Pos] | None = None
    num_gpu: Sourced[Layers] | None = None
    flash_attention: Sourced[bool] | None = None
    kv_cache_type: Sourced[KvType] | None = None
    num_parallel: Sourced[Pos] | None = None


class VllmParams(Section):
    """vLLM engine arguments (all server-start)."""

    PLAN_KNOBS = {"max_model_len": "num_ctx", "max_num_seqs": "parallel", "max_num_batched_tokens": "num_batch"}
    max_model_len: Sourced[Ctx] | None = None
    max_num_seqs: Sourced[Pos] | None = None
    max_num_batched_tokens: Sourced[Pos] | None = None
    gpu_memory_utilization: Sourced[Annotated[float, Field(gt=0, le=1)]] | None = None
    kv_cache_dtype: Sourced[str] | None = None
    enable_prefix_caching: Sourced[bool] | None = None
    extra_args: Sourced[str] | None = None


class LmStudioParams(Section):
    """LM Studio load config (REST ``/api/v1/models/load`` and SDK fields)."""

    PLAN_KNOBS = {
        "context_length": "num_ctx",
        "eval_batch_size": "num_batch",
        "flash_attention": "flash_attn",
        "k_cache_quantization": "kv_type",
        "parallel": "parallel",
    }
    context_length: Sourced[Ctx] | None = None
    eval_batch_size: Sourced[Pos] | None = None
    flash_attention: Sourced[bool] | None = None
    parallel: Sourced[Pos] | None = None
    gpu_offload: Sourced[Annotated[float, Field(ge=0, le=1)]] | None = None
    k_cache_quantization: Sourced[KvType] | None = None
    v_cache_quantization: Sourced[KvType] | None = None


class EmbeddedParams(Section):
    """llama-cpp-python ``Llama(...)`` settings for the embedded backend."""

    PLAN_KNOBS = {"n_ctx": "num_ctx", "n_batch": "num_batch", "flash_attn": "flash_attn", "type_k": "kv_type"}
    n_ctx: Sourced[Ctx] | None = None
    n_batch: Sourced[Pos] | None = None
    n_ubatch: Sourced[Pos] | None = None
    n_threads: Sourced[Pos] | None = None
    n_threads_batch: Sourced[Pos] | None = None
    flash_attn: Sourced[bool] | None = None
    type_k: Sourced[KvType] | None = None
    type_v: Sourced[KvType] | None = None
    n_gpu_layers: Sourced[Layers] | None = None


SECTION_MODELS: dict[str, type[Section]] = {
    "common": CommonParams,
    "llamacpp": LlamaCppParams,
    "ollama": OllamaParams,
    "vllm": VllmParams,
    "lmstudio": LmStudioParams,
    "embedded": EmbeddedParams,
}
SECTIONS: tuple[str, ...] = tuple(SECTION_MODELS)


class _Sections(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = ""
    common: CommonParams | None = None
    llamacpp: LlamaCppParams | None = None
    ollama: OllamaParams | None = None
    vllm: VllmParams | None = None
    lmstudio: LmStudioParams | None = None
    embedded: EmbeddedParams | None = None

    def section(self, name: str) -> Section | None:
        value = getattr(self, name, None)
        return value if isinstance(value, Section) else None


class Overlay(_Sections):
    """Model-specific values on top of the archetype defaults; ``model`` is a glob on model names."""

    model: str = Field(min_length=1)

    def matches(self, model: str) -> bool:
        return fnmatchcase(model.lower(), self.model.lower())


class Profile(_Sections):
    """One archetype's recommendations."""

    label: str = ""
    #: more archetype ids this profile serves (globs such as ``apple-m*-16gb``)
    matches: list[str] = Field(default_factory=list)
    #: the id Lemonade uses for this archetype, when it differs (e.g. ``strix-halo-128gb``)
    lemonade_id: str | None = None
    notes: str = ""
    #: contribution ids this profile was curated from (community loop)
    submissions: list[str] = Field(default_factory=list)
    overlays: list[Overlay] = Field(default_factory=list)


class ProfileSet(BaseModel):
    """A versioned set of profiles, as a plugin registers it or a URL serves it."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int
    name: str = Field(min_length=1)
    version: int = Field(ge=1)
    #: higher wins per knob when several sets have a value for the same level
    priority: int = 0
    published: str | None = None
    description: str = ""
    source: str = ""
    profiles: dict[str, Profile] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> ProfileSet:
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(f"schema_version {self.schema_version} is not supported (expected {SCHEMA_VERSION})")
        for key, profile in self.profiles.items():
            if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]*", key):
                raise ValueError(f"profiles.{key}: archetype ids are lower-case letters, digits, '.' and '-'")
            scopes: list[tuple[str, _Sections]] = [(f"profiles.{key}", profile)]
            scopes += [(f"profiles.{key}.overlays.{i}", o) for i, o in enumerate(profile.overlays)]
            for path, scope in scopes:
                inherited = scope.source or profile.source or self.source
                for name in SECTIONS:
                    section = scope.section(name)
                    if section is None:
                        continue
                    for param, sourced in section.values().items():
                        sourced.source = sourced.source or section.source or inherited
                        if not sourced.source:
                            raise ValueError(
                                f"{path}.{name}.{param}: no source; every value needs one "
                                "(on the value, its section, profile or set)"
                            )
        return self


class ProfileSetError(ConfigError):
    """A profile set failed to parse or validate; the message names the origin and the field."""


def load_profile_set(data: bytes | str | dict[str, Any], *, origin: str, fmt: str | None = None) -> ProfileSet:
    """Parse JSON or TOML (by ``fmt``, else by the first character) and validate."""
    if isinstance(data, dict):
        raw: Any = data
    else:
        text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
        is_json = fmt == "json" or (fmt is None and text.lstrip()[:1] in ("{", "["))
        try:
            raw = json.loads(text) if is_json else tomllib.loads(text)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ProfileSetError(f"{origin}: invalid {'JSON' if is_json else 'TOML'}: {exc}") from None
    if not isinstance(raw, dict):
        raise ProfileSetError(f"{origin}: a profile set is an object, got {type(raw).__name__}")
    try:
        return ProfileSet.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{origin}: invalid profile set:"]
        for item in exc.errors():
            loc = ".".join(str(p) for p in item["loc"] if not str(p).startswith(("Sourced[", "function-")))
            loc = re.sub(r"\.value$", "", loc)
            got = item.get("input")
            shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
            lines.append(f"  {loc or '<root>'}: {item['msg'].removeprefix('Value error, ')}{shown}")
        raise ProfileSetError("\n".join(lines)) from None


def dump_profile_set(profile_set: ProfileSet) -> dict[str, Any]:
    """A JSON/TOML-ready dict (None fields dropped; every value keeps its source)."""
    return profile_set.model_dump(mode="json", exclude_none=True, exclude_defaults=False)


# -- the fallback chain --------------------------------------------------------------------------


@dataclass(frozen=True)
class Origin:
    """Where a resolved value came from, for the trace and ``autotune hardware``."""

    plugin: str
    set_name: str
    set_version: int
    profile: str
    section: str
    overlay: str | None
    source: str

    def describe(self, archetype: str) -> str:
        via = "" if self.profile == archetype else f" via profile {self.profile}"
        where = f"model overlay {self.overlay!r}, " if self.overlay else ""
        label = "local overlay" if self.set_name == "local" else f"{self.set_name} v{self.set_version}"
        return f"archetype {archetype}{via} ({label}, {where}{self.section}, source: {self.source})"


@dataclass(frozen=True)
class Resolved:
    """One resolved knob: the winning value and the candidates it shadowed (record of overrides)."""

    key: str
    param: str
    value: Any
    origin: Origin
    shadowed: list[tuple[Any, Origin]] = field(default_factory=list)


def knob_key(section: str, param: str) -> str:
    """The plan knob a section field sets, else ``section.param``."""
    return SECTION_MODELS[section].PLAN_KNOBS.get(param) or f"{section}.{param}"


def profile_sets(registered: Iterable[tuple[str, Any]]) -> tuple[list[tuple[str, ProfileSet]], list[str]]:
    """Typed sets from ``host.archetype_sets`` (ProfileSet or plain dicts), plus errors for bad ones."""
    good: list[tuple[str, ProfileSet]] = []
    errors: list[str] = []
    for plugin, item in registered:
        try:
            good.append(
                (plugin, item if isinstance(item, ProfileSet) else load_profile_set(item, origin=f"plugin {plugin}"))
            )
        except ProfileSetError as exc:
            errors.append(exc.message)
    return good, errors


def resolve(
    sets: Sequence[tuple[str, ProfileSet]], archetype: Archetype, *, section: str | None, model: str | None = None
) -> dict[str, Resolved]:
    """Resolve every knob for one backend section (or only ``common`` when None).

    Candidates are ordered by: model overlay before archetype defaults; exact key (with bandwidth
    tier, then without) before glob ``matches``; higher set priority (ties: later registration);
    the backend's own section before ``common``. The first candidate per knob wins; the rest are
    kept as ``shadowed`` so every override can be shown.
    """
    keys = archetype.lookup_keys()
    sections = ([section] if section and section != "common" else []) + ["common"]
    candidates: list[tuple[tuple[int, int, int, int, int], str, ProfileSet, str, _Sections, str | None]] = []
    for order, (plugin, pset) in enumerate(sets):
        for pid, profile in pset.profiles.items():
            rank = (
                keys.index(pid)
                if pid in keys
                else (len(keys) if any(fnmatchcase(archetype.id, g) for g in profile.matches) else -1)
            )
            if rank < 0:
                continue
            scopes: list[tuple[int, _Sections, str | None]] = [(1, profile, None)]
            if model:
                scopes += [(0, o, o.model) for o in profile.overlays if o.matches(model)][:1]
            for level, scope, overlay in scopes:
                for s_rank in range(len(sections)):
                    candidates.append(
                        ((level, rank, -pset.priority, -order, s_rank), plugin, pset, pid, scope, overlay)
                    )
    candidates.sort(key=lambda c: c[0])
    result: dict[str, Resolved] = {}
    for sort_key, plugin, pset, pid, scope, overlay in candidates:
        name = sections[sort_key[4]]
        sec = scope.section(name)
        for param, sourced in (sec.values() if sec else {}).items():
            if sourced.value == "auto":
                continue  # "auto" means: leave it to the backend
            key = knob_key(name, param)
            origin = Origin(plugin, pset.name, pset.version, pid, name, overlay, sourced.source)
            if key in result:
                result[key].shadowed.append((sourced.value, origin))
            else:
                result[key] = Resolved(key, param, sourced.value, origin)
    return result


def section_for(backend: str, dialect: str = "") -> str | None:
    """Which profile section a backend reads: the embedded llama-cpp-python backend reads
    ``embedded``; OpenAI-compatible servers by flavour; anything else only ``common``."""
    if backend == "llamacpp":
        return "embedded"
    text = f"{backend} {dialect}".lower()
    for needle, name in (
        ("ollama", "ollama"),
        ("lmstudio", "lmstudio"),
        ("lm-studio", "lmstudio"),
        ("vllm", "vllm"),
        ("llama-server", "llamacpp"),
        ("llama.cpp", "llamacpp"),
        ("llamacpp", "llamacpp"),
        ("lemonade", "llamacpp"),
        ("embedded", "embedded"),
    ):
        if needle in text:
            return name
    return None
