"""Memory arithmetic shared by the no-swap guard and the model-fit pre-flight.

Exact KV bytes come from :meth:`ModelInfo.kv_bytes`; this module adds what both plugins need around
it: a *conservative* estimate when the architecture is unknown (never an optimistic guess), the
weights' size, and the original autotune's bytes-per-parameter table for quantization advice.
"""

from __future__ import annotations

from .hardware import GiB
from .modelinfo import ModelInfo

#: runtime overhead of a loaded model besides weights and KV (compute buffers, scratch)
RUNTIME_OVERHEAD_BYTES = int(0.4 * GiB)

#: bytes per parameter by quantization, heaviest first (the original's, docs/backend-facts.md#model-fit)
QUANT_BYTES_PER_PARAM: dict[str, float] = {
    "F16": 2.0,
    "Q8_0": 1.063,
    "Q6_K": 0.821,
    "Q5_K_M": 0.710,
    "Q4_K_M": 0.606,
    "Q4_K_S": 0.546,
    "Q3_K_M": 0.411,
    "Q2_K": 0.329,
}

#: an assumed architecture for unknown models: 32 layers × 8 KV heads × 128 dims (an 8B-class model)
_FALLBACK_LAYERS = 32
_FALLBACK_KV_HEADS = 8
_FALLBACK_HEAD_DIM = 128


def _fallback_layers(model: ModelInfo | None) -> int:
    """Bigger models have more layers; scale the assumption up rather than under-count."""
    params = model.parameter_count if model is not None else None
    if params is None or params <= 14e9:
        return _FALLBACK_LAYERS
    return 64 if params <= 40e9 else 80


def kv_bytes_estimate(
    model: ModelInfo | None, n_ctx: int, kv_type: str = "f16", *, parallel: int = 1
) -> tuple[int, bool]:
    """``(bytes, exact)``: exact from the architecture when known, else a conservative estimate.

    The estimate assumes full-context layers (no sliding window) of an 8B-class shape, which
    over-counts small models: the safe side for a guard.
    """
    if model is not None and model.known:
        return model.kv_bytes(n_ctx, kv_type, parallel=parallel), True
    conservative = ModelInfo(
        name="unknown",
        block_count=_fallback_layers(model),
        head_count=32,
        head_count_kv=_FALLBACK_KV_HEADS,
        key_length=_FALLBACK_HEAD_DIM,
        value_length=_FALLBACK_HEAD_DIM,
    )
    return conservative.kv_bytes(n_ctx, kv_type, parallel=parallel), False


def quant_bytes_per_param(quantization: str | None) -> float | None:
    """Bytes per parameter for a quantization name such as ``Q4_K_M`` (case-insensitive)."""
    if not quantization:
        return None
    return QUANT_BYTES_PER_PARAM.get(quantization.strip().upper())


def weights_bytes(model: ModelInfo | None) -> int | None:
    """The weights' size: the file size when known, else parameters × bytes per parameter."""
    if model is None:
        return None
    if model.size_bytes:
        return model.size_bytes
    per_param = quant_bytes_per_param(model.quantization)
    if model.parameter_count and per_param:
        return int(model.parameter_count * per_param)
    return None


__all__ = [
    "QUANT_BYTES_PER_PARAM",
    "RUNTIME_OVERHEAD_BYTES",
    "kv_bytes_estimate",
    "quant_bytes_per_param",
    "weights_bytes",
]
