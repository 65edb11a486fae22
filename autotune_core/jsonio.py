"""JSON in and out of the hot path: orjson where it gives the same answer as the standard library, the standard
library where it would not.

Why orjson: a request decodes and encodes four small documents (the client's body, the upstream body, the
upstream answer, the response); orjson does each in ~0.5 µs where ``json`` takes 4–6 µs (bench numbers in
docs/benchmarks.md). Why the fallbacks: orjson reads integers beyond 64 bits as floats (a client's
``seed`` would change on its way through), only reads UTF-8, and refuses to encode what ``json`` encodes
(big integers, non-string keys, more than 254 levels); in each case the standard library answers, exactly
as before.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

#: an integer literal orjson would turn into a float (more than 19 digits cannot fit 64 bits)
_BIG_INT = re.compile(rb"\d{20}")
#: orjson reads any depth but writes at most 254 levels: a document with more brackets than that is read by the
#: standard library, which refuses absurd nesting (RecursionError) as before and whose output ``dumps`` can write
_MAX_BRACKETS = 254


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads(data: bytes | str) -> Any:
    """Decode strictly: NaN/Infinity refused (as orjson does); malformed input raises ``ValueError`` (or
    ``RecursionError`` for absurd nesting) with the standard library's message."""
    raw = data.encode() if isinstance(data, str) else data
    if raw.count(b"[") + raw.count(b"{") <= _MAX_BRACKETS and _BIG_INT.search(raw) is None:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # the standard library's verdict and message (it also reads UTF-16/32)
    return json.loads(data, parse_constant=_no_constant)


def dumps(data: Any) -> bytes:
    """Compact UTF-8 JSON."""
    try:
        return orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # an integer beyond 64 bits, or a type only the standard library takes
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
