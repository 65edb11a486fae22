"""ctx-sizing: propose a context just big enough for this request (prompt + its output + headroom).

Why: a context sized to the request rather than the model's maximum shrinks the KV cache, often by
far more than half. Unlike the original, the request's own ``max_tokens`` is used (the profile
default only when absent), and prompt tokens are the backend tokenizer's count when it has one.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from autotune_core import ChatRequest, Choice, HookContext, Plan, fold_stage, hookimpl
from autotune_core.buckets import MIN_CTX

#: model-name fragments of reasoning models that think before answering (the original's list, extended:
#: docs/backend-facts.md#thinking-models)
THINKING_MARKERS: tuple[str, ...] = (
    "qwen3",
    "deepseek-r1",
    "qwq",
    "deepthink",
    "marco-o1",
    "gpt-oss",
    "magistral",
    "phi4-reasoning",
    "cogito",
)


class CtxSizingSettings(BaseModel):
    """``[plugins.ctx-sizing]``"""

    model_config = ConfigDict(extra="forbid")

    #: tokens added on top of prompt + output (template drift, tool-call wrappers)
    headroom: int = Field(default=256, ge=0, le=65536)
    #: extra output budget for thinking models
    thinking_overhead: int = Field(default=1024, ge=0, le=131072)
    #: the smallest context proposed
    min_context: int = Field(default=MIN_CTX, ge=64)
    #: model-name fragments that mark a thinking model
    thinking_markers: list[str] = Field(default_factory=lambda: list(THINKING_MARKERS))
    #: when the prompt alone exceeds the profile's max_context, go up to the model's maximum rather
    #: than refuse the request (the profile limits output room, never the user's prompt)
    prompt_may_exceed_profile: bool = True


def is_thinking(ctx: HookContext, request: ChatRequest, markers: list[str]) -> tuple[bool, str]:
    """Whether the model will think, and how we know. An explicit ``think: false`` wins."""
    if request.think is False:
        return False, ""
    if request.think not in (None, False, "", "none"):
        return True, f"request.think={request.think}"
    if ctx.model is not None and "thinking" in ctx.model.capabilities:
        return True, "model capability 'thinking'"
    return _named_thinking(request.model, tuple(markers))


@lru_cache(maxsize=256)
def _named_thinking(model: str, markers: tuple[str, ...]) -> tuple[bool, str]:
    """The model-name test, once per model (and marker list) rather than on every request."""
    name = model.lower()
    for marker in markers:
        if marker.lower() in name:
            return True, f"model name contains {marker!r}"
    return False, ""


class CtxSizingPlugin:
    """Dynamic num_ctx: prompt tokens + the request's max_tokens (+ thinking) + headroom."""

    name = "ctx-sizing"
    Settings = CtxSizingSettings

    @hookimpl
    @fold_stage("propose")
    def choose_num_ctx(
        self, ctx: HookContext, request: ChatRequest, plan: Plan, proposal: Choice[Any] | None
    ) -> Choice[int] | None:
        settings = ctx.settings(CtxSizingSettings)
        prompt = plan.prompt_tokens or 0
        counted = "counted" if plan.prompt_tokens_exact else "estimated"
        if plan.max_tokens is not None:
            output, output_src = plan.max_tokens, "request max_tokens"
        else:
            output, output_src = ctx.profile.max_new_tokens, f"{ctx.profile.name} profile default output"
        thinking, why = is_thinking(ctx, request, settings.thinking_markers)
        extra = settings.thinking_overhead if thinking else 0
        need = prompt + output + extra + settings.headroom
        model_max = ctx.model.context_length if ctx.model is not None and ctx.model.context_length else None
        ceiling = min(ctx.profile.max_context, model_max) if model_max else ctx.profile.max_context
        floor = min(settings.min_context, model_max) if model_max else settings.min_context
        parts = [f"prompt {prompt} ({counted}) + output {output} ({output_src})"]
        if extra:
            parts.append(f"thinking {extra} ({why})")
        parts.append(f"headroom {settings.headroom}")
        reason = " + ".join(parts) + f" = {need}"
        if settings.prompt_may_exceed_profile and model_max and prompt + settings.headroom > ceiling:
            ceiling = max(ceiling, min(model_max, prompt + settings.headroom))
            reason += (
                f"; the prompt alone exceeds the {ctx.profile.name} profile's {ctx.profile.max_context}, "
                f"allowed up to the model's {model_max}"
            )
        value = max(floor, min(need, ceiling))
        if value < need:
            room = max(0, value - prompt)
            reason += f"; clamped to {value} (max {ceiling}): only {room} tokens left for output"
            if prompt + output > value:
                reason += f", max_tokens {output} cannot fit"
        elif value > need:
            reason += f"; raised to the minimum {floor}"
        return Choice(value, reason)
