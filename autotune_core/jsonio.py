"""JSON in and out of the hot path: orjson where it gives the same answer as the standard library, the standard
library where it would not.

Why orjson: a request decodes and encodes four small documents (the client's body, the upstream body, the
upstream answer, the response); orjson does each in ~0.5 µs where ``json`` takes 4–6 µs (docs/benchmarks.md).
Reading is orjson's only for small documents (see ``_SMALL``); writing always is.

Why the fallbacks: orjson reads integers beyond 64 bits as floats (a client's ``seed`` would change on its
way through), only reads UTF-8, reads any depth but writes at most 254 levels, and refuses to encode what
``json`` encodes (big integers, non-string keys); in each case the standard library answers, as before.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

#: an integer literal orjson could turn into a float has 19 digits or more (below -2**63 from
#: -9223372036854775809, above 2**64 - 1): found by mapping every digit to "0" and looking for 19 of them
#: (two C passes; a regex scan took ~15 ns a byte, 1.5 ms for a 100 KB conversation)
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_NUMBER = b"0" * 19
#: orjson reads any depth but writes at most 254 levels: a document with more brackets than that is read by the
#: standard library, which refuses absurd nesting (RecursionError) as before and whose output ``dumps`` can write
_MAX_BRACKETS = 254
#: documents up to this size take the orjson path: the checks above cost ~2.5 ns a byte, more than the standard
#: library's whole parse (~1.6 ns a byte), so orjson only wins where per-call overhead dominates (a request of a
#: few turns, an upstream answer, a probe); a long conversation is read by the standard library, as before
_SMALL = 4096


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads(data: bytes | str, *, constants: bool = False) -> Any:
    """Decode; malformed input raises ``ValueError`` (or ``RecursionError`` for absurd nesting) with the standard
    library's message. NaN/Infinity are refused unless ``constants`` (a model server's answer may carry
    ``-Infinity`` logprobs, as Python's json writes them; a client's body may not)."""
    raw = data.encode() if isinstance(data, str) else data
    if (
        len(raw) <= _SMALL
        and raw.count(b"[") + raw.count(b"{") <= _MAX_BRACKETS
        and _LONG_NUMBER not in raw.translate(_DIGITS_TO_ZERO)
    ):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # the standard library's verdict and message (it also reads UTF-16/32, and the constants)
    return json.loads(data) if constants else json.loads(data, parse_constant=_no_constant)


def dumps(data: Any) -> bytes:
    """Compact UTF-8 JSON. (orjson writes NaN and ±Infinity as ``null``, where the standard library wrote
    tokens that are not JSON.)"""
    try:
        return orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        # an integer beyond 64 bits, a lone surrogate ("\ud83d" from a client that cut an emoji in half), a type
        # only the standard library takes: ASCII-escaped, so every string survives as it came
        return json.dumps(data, separators=(",", ":")).encode("ascii")
