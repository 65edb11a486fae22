"""Ollama's request rules and the fake's records: the fields its ``/v1`` layer keeps, Go durations for
``keep_alive``, the error type, and what the scheduler tracks per runner."""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

from .models import FakeModel

__all__ = [
    "FOREVER",
    "V1_CHAT_FIELDS",
    "V1_COMPLETION_FIELDS",
    "V1_EMBED_FIELDS",
    "LoadEvent",
    "OllamaError",
    "Runner",
    "parse_go_duration",
    "parse_keep_alive",
]

# Fields of openai.ChatCompletionRequest in Ollama; everything else is dropped by Go's JSON decoder.
V1_CHAT_FIELDS = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "max_tokens",
        "seed",
        "stop",
        "temperature",
        "frequency_penalty",
        "presence_penalty",
        "top_p",
        "response_format",
        "tools",
        "reasoning",
        "reasoning_effort",
        "logprobs",
        "top_logprobs",
    }
)
V1_COMPLETION_FIELDS = frozenset(
    {
        "model",
        "prompt",
        "stream",
        "stream_options",
        "max_tokens",
        "seed",
        "stop",
        "temperature",
        "frequency_penalty",
        "presence_penalty",
        "top_p",
        "suffix",
        "logprobs",
    }
)
V1_EMBED_FIELDS = frozenset({"model", "input", "encoding_format", "dimensions"})

_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
FOREVER = math.inf


def parse_go_duration(text: str) -> float:
    """Go's ``time.ParseDuration`` in seconds; raises ``ValueError`` with Go's message."""
    orig = text
    if text in ("0", "+0", "-0"):
        return 0.0
    sign = 1.0
    if text[:1] in ("+", "-"):
        sign = -1.0 if text[0] == "-" else 1.0
        text = text[1:]
    if not text:
        raise ValueError(f'time: invalid duration "{orig}"')
    total, pos = 0.0, 0
    while pos < len(text):
        m = _DURATION_RE.match(text, pos)
        if m is None:
            if re.fullmatch(r"[0-9.]+", text[pos:]):
                raise ValueError(f'time: missing unit in duration "{orig}"')
            num = re.match(r"[0-9.]+", text[pos:])
            if num is not None:
                unit = re.match(r"[^0-9.]+", text[pos + num.end() :])
                raise ValueError(f'time: unknown unit "{unit.group(0) if unit else ""}" in duration "{orig}"')
            raise ValueError(f'time: invalid duration "{orig}"')
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def parse_keep_alive(value: Any) -> float:
    """``api.Duration.UnmarshalJSON``: seconds; ``math.inf`` for "forever"."""
    if isinstance(value, bool):
        raise ValueError("Unsupported type: 'bool'")
    if isinstance(value, int | float):
        return FOREVER if value < 0 else float(int(value))
    if isinstance(value, str):
        seconds = parse_go_duration(value)
        return FOREVER if seconds < 0 else seconds
    raise ValueError(f"Unsupported type: '{type(value).__name__}'")


class OllamaError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class LoadEvent:
    """One load (``kind="load"``), reload (``"reload"``) or unload (``"unload"``) of a runner."""

    model: str
    kind: str
    options: dict[str, Any]
    previous: dict[str, Any] | None = None
    reason: str = ""


@dataclass
class Runner:
    model: FakeModel
    options: dict[str, Any]
    shift: bool
    keep_alive: float
    expires_at: float
    cache: list[str] = field(default_factory=list)
    loaded_at: float = field(default_factory=time.time)
