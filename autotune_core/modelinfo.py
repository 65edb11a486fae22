"""A model's architecture, as far as KV-cache arithmetic needs it, plus the exact KV formula.

The formula follows research/backend-knobs.md §8: per layer, KV heads × (key dim + value dim),
sliding-window layers only hold about the window, and the whole thing scales with parallel slots.
"""

from __future__ import annotations

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

#: KV types ordered from most to least precise; "lower" means fewer bytes.
KV_PRECISION_ORDER: tuple[str, ...] = ("f32", "f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl")


def kv_type_bytes(kv_type: str) -> float:
    """Bytes per element; unknown names raise so a typo never silently sizes as f16."""
    try:
        return KV_BYTES_PER_ELEMENT[kv_type.lower()]
    except KeyError as exc:
        raise ValueError(f"unknown KV cache type {kv_type!r}; expected one of "
                         f"{', '.join(KV_BYTES_PER_ELEMENT)}") from exc


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

    def kv_bytes(self, n_ctx: int, kv_type: str = "f16", *, parallel: int = 1, n_ubatch: int = 512,
                 swa_full: bool = False) -> int:
        """Exact KV-cache bytes for a context of ``n_ctx`` tokens per slot.

        Sliding-window layers (llama.cpp without ``--swa-full``) keep about
        ``min(n_ctx, window + n_ubatch)`` cells instead of the whole context.
        """
        key, value = self._head_dims()
        per_elem = kv_type_bytes(kv_type)
        total_ctx = n_ctx * max(1, parallel)
        swa = self.swa_layers or []
        total = 0.0
        for layer, heads in enumerate(self.kv_heads()):
            cells = total_ctx
            if not swa_full and self.sliding_window and layer < len(swa) and swa[layer]:
                cells = min(total_ctx, (self.sliding_window * max(1, parallel)) + n_ubatch)
            total += cells * heads * (key + value) * per_elem
        return int(total)
