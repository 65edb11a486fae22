"""A calibrated token estimate for when no tokenizer is at hand.

len/4 (the original autotune's rule, docs/backend-facts.md#token-estimate) under-counts code, numbers and
non-Latin text. We count word pieces,
punctuation and non-ASCII characters separately; on English prose this lands within about 10 % of
BPE tokenizers, and it errs high on code, which is the safe side for context sizing.
"""

from __future__ import annotations

import contextlib
import re

from .messages import Message

_WORD = re.compile(r"[A-Za-z]+|\d+|[^\sA-Za-z\d]")

#: chat-template overhead per message (role markers, separators)
PER_MESSAGE_OVERHEAD = 4


#: estimates by (length, hash) of the text: the same system prompt and history come back every turn and
#: several plugins ask per request. Keys hold no text (bounded memory, no prompt kept); a 64-bit hash
#: collision could only return another text's estimate of the same length.
_CACHE: dict[tuple[int, int], int] = {}
_CACHE_MAX = 4096
_CACHE_MIN_CHARS = 64


def estimate_tokens(text: str) -> int:
    """Estimated tokens of one text (cached for texts of 64 characters and more)."""
    if len(text) < _CACHE_MIN_CHARS:
        return _estimate(text)
    key = (len(text), hash(text))
    cached = _CACHE.get(key)
    if cached is None:
        cached = _estimate(text)
        if len(_CACHE) >= _CACHE_MAX:
            # drop the oldest entry (dicts keep insertion order); tolerant of another thread doing the same
            with contextlib.suppress(StopIteration, RuntimeError):
                _CACHE.pop(next(iter(_CACHE)), None)
        _CACHE[key] = cached
    return cached


def _estimate(text: str) -> int:
    if not text:
        return 0
    count = 0
    for piece in _WORD.findall(text):
        if piece.isascii() and piece.isalpha():
            count += 1 + len(piece) // 7
        elif piece.isdigit():
            count += (len(piece) + 2) // 3
        elif piece.isascii():
            count += 1
        else:
            count += 1 if ord(piece) < 0x3000 else 2 if ord(piece) >= 0x10000 else 1
    return count


def estimate_message_tokens(messages: list[Message]) -> int:
    """Estimated prompt tokens of a message list, including per-message template overhead."""
    total = 3
    for message in messages:
        total += PER_MESSAGE_OVERHEAD + estimate_tokens(message.content)
        for call in message.tool_calls:
            total += estimate_tokens(call.name) + estimate_tokens(call.arguments)
        total += 258 * len(message.images)
    return total
