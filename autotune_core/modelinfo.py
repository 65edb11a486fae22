"""A model's architecture, as far as KV-cache arithmetic needs it, plus the exact KV formula.

The formula (docs/backend-facts.md#kv-cache-size-formula): per layer, KV heads × (key dim + value dim),
sliding-window layers only hold about the window, and the whole thing scales with parallel slots.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field

# Bytes per element of the KV cache, as llama.cpp stores them (q8_0 = 34 bytes per 32 values).
KV_BYTES_PER_ELEMENT: dict[str, float] = {
    "f32": 4.0,
    "f16": 2.0,
    "bf16": 2.0,
    "q8_0": 34 / 32,
    "q5_1": 24 / 32,
    "q5_0": 22 / 32,
    "q4_1": 20 / 32,
    "q4_0": 18 / 32,
    "iq4_nl": 18 / 32,
}

#: llama.cpp pads the KV cell count to a multiple of this
KV_CELL_PAD = 256

#: KV types ordered from most to least precise; "lower" means fewer bytes.
KV_PRECISION_ORDER: tuple[str, ...] = ("f32", "f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl")


def kv_type_bytes(kv_type: str) -> float:
    """Bytes per element; unknown names raise so a typo never silently sizes as f16."""
    try:
        return KV_BYTES_PER_ELEMENT[kv_type.lower()]
    except KeyError as exc:
        raise ValueError(
            f"unknown KV cache type {kv_type!r}; expected one of {', '.join(KV_BYTES_PER_ELEMENT)}"
        ) from exc


def smaller_kv_type(a: str, b: str) -> str:
    """The more conservative (fewer bytes) of two KV types."""
    return a if kv_type_bytes(a) <= kv_type_bytes(b) else b


class ModelInfo(BaseModel):
    """Architecture facts read from GGUF metadata or ``/api/show``."""

    name: str
    architecture: str = "unknown"
    block_count: int = 0
    head_count: int = 0
    head_count_kv: int | list[int] = 0
    key_length: int | None = None
    value_length: int | None = None
    embedding_length: int = 0
    context_length: int | None = None
    sliding_window: int | None = None
    #: per layer, True where the layer uses the sliding window (None: no SWA layers known)
    swa_layers: list[bool] | None = None
    quantization: str | None = None
    size_bytes: int | None = None
    parameter_count: int | None = None
    family: str | None = None
    capabilities: list[str] = Field(default_factory=list)

    @property
    def known(self) -> bool:
        """Whether the facts suffice for exact KV arithmetic."""
        return self.block_count > 0 and (self.key_length is not None or self.head_count > 0)

    def _head_dims(self) -> tuple[int, int]:
        fallback = self.embedding_length // self.head_count if self.head_count else 0
        return (self.key_length or fallback, self.value_length or self.key_length or fallback)

    def kv_heads(self) -> list[int]:
        """KV heads for every layer (0 for recurrent/SSM layers)."""
        if isinstance(self.head_count_kv, list):
            heads = list(self.head_count_kv)
            return (heads + [heads[-1] if heads else 0] * self.block_count)[: self.block_count]
        return [self.head_count_kv or self.head_count] * self.block_count

    def kv_elements_per_token(self) -> int:
        """Σ over layers of KV heads × (key dim + value dim), for a full-context layer."""
        key, value = self._head_dims()
        return sum(heads * (key + value) for heads in self.kv_heads())

    def kv_bytes(
        self,
        n_ctx: int,
        kv_type: str = "f16",
        *,
        parallel: int = 1,
        n_ubatch: int = 512,
        swa_full: bool = False,
        pad: int = KV_CELL_PAD,
    ) -> int:
        """Exact KV-cache bytes for a context of ``n_ctx`` tokens per slot, as llama.cpp allocates it.

        llama.cpp rounds the cell count up to a multiple of ``pad`` (256), and sliding-window layers
        (without ``--swa-full``) keep ``pad(min(n_ctx, window + n_ubatch))`` cells instead of the whole
        context. Slots with their own KV (explicit ``-np``, Ollama) multiply everything by ``parallel``.
        Verified against llama.cpp's "llama_kv_cache: size = ..." log for gemma3 (tests/backends).
        """
        key, value = self._head_dims()
        per_elem = kv_type_bytes(kv_type)
        slots = max(1, parallel)
        full_cells = _pad(n_ctx, pad)
        swa_cells = (
            full_cells
            if swa_full or not self.sliding_window
            else _pad(min(full_cells, self.sliding_window + n_ubatch), pad)
        )
        swa = self.swa_layers or []
        total = 0.0
        for layer, heads in enumerate(self.kv_heads()):
            cells = swa_cells if layer < len(swa) and swa[layer] else full_cells
            total += cells * slots * heads * (key + value) * per_elem
        return int(total)

    @classmethod
    def from_gguf(cls, name: str, kv: Mapping[str, Any]) -> ModelInfo:
        """Build from a GGUF key/value map (Ollama's ``/api/show`` ``model_info``, ``Llama.metadata``).

        Values may be strings (llama-cpp-python stringifies them); per-layer arrays are kept.
        """
        arch = str(kv.get("general.architecture") or "unknown")

        def num(key: str) -> int | None:
            value = kv.get(f"{arch}.{key}")
            if value is None or isinstance(value, list | tuple):
                return None
            try:
                return int(float(value))
            except (TypeError, ValueError):
                return None

        def per_layer(key: str) -> int | list[int] | None:
            value = kv.get(f"{arch}.{key}")
            if isinstance(value, list | tuple):
                return [int(v) for v in value] if value else None
            return num(key)

        block_count = num("block_count") or 0
        head_count = per_layer("attention.head_count")
        head_count_kv = per_layer("attention.head_count_kv")
        window = num("attention.sliding_window")
        explicit = kv.get(f"{arch}.attention.sliding_window_pattern")
        params = kv.get("general.parameter_count")
        return cls(
            name=name,
            architecture=arch,
            block_count=block_count,
            head_count=max(head_count) if isinstance(head_count, list) else (head_count or 0),
            head_count_kv=head_count_kv if head_count_kv is not None else 0,
            key_length=num("attention.key_length"),
            value_length=num("attention.value_length"),
            embedding_length=num("embedding_length") or 0,
            context_length=num("context_length"),
            sliding_window=window or None,
            swa_layers=swa_layer_pattern(arch, block_count, explicit) if window else None,
            parameter_count=int(float(params)) if params not in (None, "") else None,
        )


#: llama.cpp ``set_swa_pattern(n)``: layer ``il`` slides when ``il % n < n - 1`` (dense every n-th layer)
SWA_PATTERNS: dict[str, int] = {"gemma3": 6, "gemma2": 2, "cohere2": 4, "gpt-oss": 2, "gemma3n": 5}


def _pad(value: int, pad: int) -> int:
    return value if pad <= 1 else -(-value // pad) * pad


def swa_layer_pattern(arch: str, block_count: int, explicit: Any = None) -> list[bool] | None:
    """Which layers use the sliding window: the GGUF's explicit per-layer pattern, else llama.cpp's
    fixed pattern for the architecture, else None (unknown: size every layer for the full context)."""
    if isinstance(explicit, list | tuple) and explicit:
        flags = [bool(int(v)) if isinstance(v, str) and v.isdigit() else bool(v) for v in explicit]
        return (flags + [flags[-1]] * block_count)[:block_count]
    n = SWA_PATTERNS.get(arch)
    if not n or block_count <= 0:
        return None
    return [il % n < n - 1 for il in range(block_count)]
