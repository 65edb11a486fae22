"""Durations as Ollama and our config accept them: seconds, or Go-style text such as "30m" or "1h30m"."""

from __future__ import annotations

import math
import re

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_FOREVER = {"forever", "infinite", "inf", "never"}


def parse_duration(value: str | float | int) -> float:
    """Seconds from a number or a Go-style duration ("30m", "1h30m", "-1m"); negative means forever.

    Raises ValueError for anything Ollama would reject (e.g. "10 minutes"); a bare numeric string
    counts as seconds, as in config files.
    """
    if isinstance(value, bool):
        raise ValueError("expected seconds or a duration such as '30m', not a boolean")
    if isinstance(value, int | float):
        if math.isnan(value):
            raise ValueError("not a number")
        return -1.0 if value < 0 else float(value)
    text = value.strip().lower()
    if text in _FOREVER:
        return -1.0
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return -1.0 if number < 0 else number
    sign, body = (-1.0, text[1:]) if text.startswith("-") else (1.0, text.lstrip("+"))
    if not body:
        raise ValueError(f"invalid duration {value!r}")
    total, position = 0.0, 0
    for match in _PART.finditer(body):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if position != len(body):
        raise ValueError(f"invalid duration {value!r}; expected seconds or a Go duration like '30m', '1h', '-1'")
    return -1.0 if sign < 0 else total
