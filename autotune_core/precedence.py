"""Who decides a knob: what the client set explicitly, then the per-model config, then the plugins.

autotune's promise is "your code stays the same", so a value the client sent (``options.num_ctx``,
``keep_alive``, ``max_tokens``, ...) reaches the backend unchanged. Such a value is *pinned* on the plan
before any hook runs: plugins still run and the trace records what they would have chosen, but only a
*safety* choice (a guard: the value would not fit in memory) may lower a pin, and then the plan carries
a warning that the response shows (``X-Autotune-Warning``). ``client_overrides = "tune"`` (global or per
model) hands the client's knobs to the plugins instead; per-model config values stay pinned either way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .durations import parse_duration
from .modelinfo import kv_type_bytes, smaller_kv_type

if TYPE_CHECKING:
    from .config import ModelOverride
    from .messages import ChatRequest

ClientOverrides = Literal["respect", "tune"]
Source = Literal["client", "config"]

#: plan knobs a client can set, and the ``options`` names that set each (Ollama's first)
OPTION_NAMES: dict[str, tuple[str, ...]] = {
    "num_ctx": ("num_ctx",),
    "num_batch": ("num_batch",),
    "num_keep": ("num_keep",),
    "num_thread": ("num_thread",),
    "kv_type": ("kv_type", "kv_cache_type"),
}
#: every knob the precedence rule covers (``keep_alive`` and ``max_tokens`` are request fields)
KNOBS: tuple[str, ...] = ("num_ctx", "num_batch", "num_keep", "num_thread", "keep_alive", "kv_type", "max_tokens")
#: knobs a safety guard may lower below a pin (memory, or an output that would overrun the context)
LOWERABLE: frozenset[str] = frozenset({"num_ctx", "num_batch", "kv_type", "max_tokens"})


@dataclass(frozen=True, slots=True)
class Pin:
    """A knob fixed before planning: its value, who fixed it, and how they wrote it. A frozen dataclass (one
    per explicit client value on every request; pydantic still dumps it with the plan)."""

    knob: str
    value: Any
    source: Source
    #: where it came from: "options.num_ctx", "keep_alive", "[server.models.\"qwen3\"] num_ctx"
    origin: str
    #: the value exactly as the client wrote it (``keep_alive: "5m"`` is pinned as 300.0 but sent as "5m")
    sent: Any = None

    def describe(self) -> str:
        who = "client asked" if self.source == "client" else "configured"
        shown = self.sent if self.sent is not None else self.value
        return f"{who} {shown!r} ({self.origin})" if isinstance(shown, str) else f"{who} {shown} ({self.origin})"


def _whole(value: Any) -> int | None:
    """A positive-or-zero integer option, else None (a bad value passes through for the server to refuse)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and (math.isnan(value) or not value.is_integer()):
        return None
    number = int(value)
    return number if number >= 0 else None


def _kv(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        kv_type_bytes(value)
    except ValueError:
        return None  # kv-precision refuses unknown types with a clear error
    return value.lower()


def client_pins(request: ChatRequest) -> dict[str, Pin]:
    """The knobs this request set explicitly."""
    pins: dict[str, Pin] = {}
    for knob, names in OPTION_NAMES.items():
        for name in names:
            if name not in request.options:
                continue
            value = _kv(request.options[name]) if knob == "kv_type" else _whole(request.options[name])
            if value is not None:
                pins[knob] = Pin(knob=knob, value=value, source="client", origin=f"options.{name}")
            break
    if request.keep_alive is not None:
        try:
            seconds = parse_duration(request.keep_alive)
        except ValueError:
            pass  # unparseable: passed through untouched for the server to judge
        else:
            pins["keep_alive"] = Pin(
                knob="keep_alive", value=seconds, source="client", origin="keep_alive", sent=request.keep_alive
            )
    if request.max_tokens is not None:
        origin = "options.num_predict" if request.dialect == "ollama" else "max_tokens"
        pins["max_tokens"] = Pin(knob="max_tokens", value=request.max_tokens, source="client", origin=origin)
    return pins


def config_pins(model: str, override: ModelOverride | None) -> dict[str, Pin]:
    """The knobs the user fixed for this model in ``[server.models."<model>"]``."""
    if override is None:
        return {}
    pins: dict[str, Pin] = {}
    for knob in KNOBS:
        value = getattr(override, knob, None)
        if value is not None:
            pins[knob] = Pin(knob=knob, value=value, source="config", origin=f'[server.models."{model}"] {knob}')
    return pins


def pins_for(request: ChatRequest, override: ModelOverride | None, default: ClientOverrides) -> dict[str, Pin]:
    """Client values win over the model's config, which wins over the plugins ("tune": config only)."""
    pins = config_pins(request.model, override)
    mode = override.client_overrides if override is not None and override.client_overrides else default
    if mode == "respect":
        pins.update(client_pins(request))
    return pins


def lowers(knob: str, pinned: Any, value: Any) -> bool:
    """Whether ``value`` is strictly more conservative than the pinned value (fewer tokens or bytes)."""
    if knob not in LOWERABLE or value is None or pinned is None or value == pinned:
        return False
    if knob == "kv_type":
        try:
            return bool(smaller_kv_type(str(value), str(pinned)) == value)
        except ValueError:
            return False
    try:
        return bool(value < pinned)
    except TypeError:
        return False
