"""keep-alive: keep the model resident between requests, unless the client decided otherwise.

Why: a model unloaded after Ollama's default 5 minutes costs a full load (seconds) on the next
request. We ask for "forever" by default (Ollama ``keep_alive=-1``, LM Studio ``ttl``, the embedded
backend: no idle unload). A client that sent its own ``keep_alive`` — including 0, a deliberate
unload — always wins, and the trace says so.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_validator

from autotune_core import ChatRequest, HookContext, KnobScope, Plan, hookimpl
from autotune_core.durations import parse_duration

__all__ = ["KeepAlivePlugin", "KeepAliveSettings", "parse_duration"]


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
                plan.record(
                    self.name,
                    "keep_alive",
                    None,
                    None,
                    f"client sent keep_alive={request.keep_alive!r} (unparseable); passed through untouched",
                )
                return
            what = "unload after this request" if sent == 0 else "forever" if sent < 0 else f"{sent:g}s"
            why = f"client sent keep_alive={request.keep_alive!r} ({what}); the client's choice wins"
            if not plan.set(self.name, "keep_alive", sent, why) and plan.keep_alive == sent:
                plan.record(self.name, "keep_alive", sent, sent, why)  # already pinned by the core: say so
            return
        settings = ctx.settings(KeepAliveSettings)
        what = "forever" if settings.value < 0 else f"{settings.value:g}s"
        plan.set(self.name, "keep_alive", settings.value, f"keep {plan.model} loaded {what} (no reload next time)")
