"""keep-alive: keep the model resident between requests, unless the client decided otherwise.

Why: a model unloaded after Ollama's default 5 minutes costs a full load (seconds) on the next
request. We ask for "forever" by default (Ollama ``keep_alive=-1``, LM Studio ``ttl``, the embedded
backend: no idle unload). A client that sent its own ``keep_alive`` — including 0, a deliberate
unload — always wins, and the trace says so.
"""

from __future__ import annotations

import math
import re

from pydantic import BaseModel, ConfigDict, field_validator

from autotune_core import ChatRequest, HookContext, KnobScope, Plan, hookimpl

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


class KeepAliveSettings(BaseModel):
    """``[plugins.keep-alive]``"""

    model_config = ConfigDict(extra="forbid")

    #: seconds, or a duration like "30m"; negative (or "forever") keeps the model loaded indefinitely
    value: float = -1.0

    @field_validator("value", mode="before")
    @classmethod
    def _parse(cls, value: object) -> float:
        if not isinstance(value, str | int | float):
            raise ValueError("expected seconds or a duration such as '30m'")
        return parse_duration(value)


class KeepAlivePlugin:
    """Keeps models resident (default: forever); never overrides a client's explicit keep_alive."""

    name = "keep-alive"
    Settings = KeepAliveSettings

    @hookimpl
    def pre_request(self, ctx: HookContext, request: ChatRequest, plan: Plan) -> None:
        scope = ctx.capabilities.scope("keep_alive")
        if scope is KnobScope.UNSUPPORTED:
            plan.record(self.name, "keep_alive", None, None, f"{ctx.backend_name} has no keep-alive; nothing to do")
            return
        if request.keep_alive is not None:
            try:
                sent = parse_duration(request.keep_alive)
            except ValueError:
                plan.record(self.name, "keep_alive", None, None,
                            f"client sent keep_alive={request.keep_alive!r} (unparseable); passed through untouched")
                return
            what = "unload after this request" if sent == 0 else "forever" if sent < 0 else f"{sent:g}s"
            plan.set(self.name, "keep_alive", sent, f"client sent keep_alive={request.keep_alive!r} ({what}); "
                                                     "the client's choice wins")
            return
        settings = ctx.settings(self.name)
        assert isinstance(settings, KeepAliveSettings)
        what = "forever" if settings.value < 0 else f"{settings.value:g}s"
        plan.set(self.name, "keep_alive", settings.value, f"keep {plan.model} loaded {what} (no reload next time)")
