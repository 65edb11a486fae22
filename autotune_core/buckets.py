"""Context-size buckets shared by the sizing, bucket, pressure and no-swap plugins.

Why buckets: every distinct ``num_ctx`` reloads an Ollama/llama.cpp model, so sizes are rounded to a
short ladder. Reductions snap *down* (so they survive) and needs snap *up* (so the prompt fits).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from functools import lru_cache

#: the original autotune's ladder (docs/backend-facts.md#context-buckets); powers of two continue above it
CTX_BUCKETS: tuple[int, ...] = (512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192, 12288, 16384, 32768)

#: the smallest context autotune ever proposes
MIN_CTX = 512

#: used when a model's trained context is unknown
DEFAULT_MODEL_MAX = 131072


@lru_cache(maxsize=64)
def buckets_up_to(model_max: int | None = None) -> tuple[int, ...]:
    """The bucket ladder for a model: the fixed list, then powers of two, never above ``model_max``.

    A trained context that is not itself a bucket (e.g. 40960) becomes the top rung, so a prompt
    that needs it can still be served.
    """
    top = model_max if model_max and model_max > 0 else DEFAULT_MODEL_MAX
    ladder = [b for b in CTX_BUCKETS if b <= top]
    size = CTX_BUCKETS[-1] * 2
    while size <= top:
        ladder.append(size)
        size *= 2
    if not ladder or ladder[-1] < top:
        ladder.append(top)
    return tuple(ladder)


def snap_up(n: int, model_max: int | None = None) -> int:
    """The smallest bucket ≥ ``n``; the top bucket when ``n`` is larger than all of them."""
    ladder = buckets_up_to(model_max)
    index = bisect_left(ladder, n)
    return ladder[min(index, len(ladder) - 1)]


def snap_down(n: int, model_max: int | None = None) -> int:
    """The largest bucket ≤ ``n``; the smallest bucket when ``n`` is below all of them."""
    ladder = buckets_up_to(model_max)
    index = bisect_right(ladder, n) - 1
    return ladder[max(index, 0)]


def bucket_index(n: int, model_max: int | None = None) -> int:
    """Position of the bucket ``n`` snaps up to (for hysteresis: "two rungs smaller")."""
    ladder = buckets_up_to(model_max)
    return min(bisect_left(ladder, n), len(ladder) - 1)


__all__ = ["CTX_BUCKETS", "DEFAULT_MODEL_MAX", "MIN_CTX", "bucket_index", "buckets_up_to", "snap_down", "snap_up"]
