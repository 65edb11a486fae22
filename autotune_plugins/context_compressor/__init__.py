"""context-compressor: keeps a long conversation inside the context budget without losing what matters.

Tiers at 55 / 75 / 90 % of the history budget (the original autotune's: docs/backend-facts.md#context-compressor),
but the result is re-checked and
escalated until it fits; if even the emergency tier cannot fit, the request is left for the core to
refuse. The system prompt stays first and byte-identical; the facts block goes right after it.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field, model_validator

from autotune_core import ChatRequest, HookContext, Message, Plan, hookimpl
from autotune_core.tokens import PER_MESSAGE_OVERHEAD, estimate_tokens

from .memo import Memo
from .window import DEFAULT_RULES, Outcome, TierRule, compress_history

__all__ = ["ContextCompressorPlugin", "Memo", "compress_history"]


class CompressorSettings(BaseModel):
    """``[plugins.context-compressor]``."""

    model_config = ConfigDict(extra="forbid")

    #: fractions of the history budget where the three tiers start
    thresholds: tuple[float, float, float] = (0.55, 0.75, 0.90)
    #: messages kept in the recent window per tier
    recent_windows: tuple[int, int, int] = (8, 6, 4)
    #: tokens kept free besides the output reserve (the original's 64, docs/backend-facts.md#context-compressor)
    safety_margin: int = Field(default=64, ge=0)
    #: messages whose per-message results (score, compressed forms, facts) are remembered across
    #: requests, so a long conversation costs about the same per turn as a short one; 0 = off
    remembered_messages: int = Field(default=4096, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> CompressorSettings:
        a, b, c = self.thresholds
        if not 0 < a < b < c <= 1.5:
            raise ValueError("thresholds must increase, e.g. [0.55, 0.75, 0.90]")
        if any(n < 0 for n in self.recent_windows):
            raise ValueError("recent_windows must be ≥ 0")
        return self


def _count(tokens: Callable[[str], int], message: Message) -> int:
    total = PER_MESSAGE_OVERHEAD + tokens(message.content)
    for call in message.tool_calls:
        total += tokens(call.name) + tokens(call.arguments)
    return total + 258 * len(message.images)


class ContextCompressorPlugin:
    """History compression in tiers (55/75/90 %), re-checked to fit; code and tracebacks kept whole."""

    name = "context-compressor"
    Settings = CompressorSettings

    def __init__(self) -> None:
        #: per-message results shared by every conversation (keyed by role and exact text)
        self.memo = Memo()

    def budget(self, ctx: HookContext, plan: Plan, prefix: list[Message], tail: list[Message], margin: int) -> int:
        """min(profile max, model trained) − system − latest user turn − output reserve − margin."""
        ceiling = ctx.profile.max_context
        if ctx.model is not None and ctx.model.context_length:
            ceiling = min(ceiling, ctx.model.context_length)
        reserve = plan.max_tokens or ctx.profile.max_new_tokens
        fixed = sum(_count(ctx.tokens, m) for m in (*prefix, *tail))
        return ceiling - fixed - reserve - margin

    @hookimpl(trylast=True)
    def pre_request(self, ctx: HookContext, request: ChatRequest, plan: Plan) -> None:
        """Runs last among pre_request hooks so it sees every injected message (e.g. recall)."""
        if request.kind != "chat" or len(plan.messages) < 3:
            return
        settings = ctx.settings(CompressorSettings)
        from .window import split

        prefix, history, tail = split(plan.messages)
        if not history:
            return
        if self.memo.max_entries != settings.remembered_messages:
            self.memo = Memo(settings.remembered_messages)
        budget = self.budget(ctx, plan, prefix, tail, settings.safety_margin)
        rules = tuple(
            TierRule(r.name, n, r.drop_below, r.recent_mode, r.older_mode, r.compact)
            for r, n in zip(DEFAULT_RULES, settings.recent_windows, strict=True)
        )
        tokens = ctx.count_tokens or estimate_tokens
        outcome = compress_history(
            plan.messages,
            budget=budget,
            count=lambda m: _count(tokens, m),
            thresholds=settings.thresholds,
            rules=rules,
            memo=self.memo,
        )
        self._apply(plan, outcome)

    def _apply(self, plan: Plan, outcome: Outcome) -> None:
        if outcome.tier == "FULL":
            return
        plan.flags["compression"] = {
            "tier": outcome.tier,
            "saved_tokens": outcome.saved,
            "budget": outcome.budget,
            "history_tokens": outcome.history_after,
            "fits": outcome.fits,
        }
        if not outcome.fits:
            plan.record(
                self.name,
                "messages",
                len(plan.messages),
                len(plan.messages),
                f"history of {outcome.history_before} tokens cannot fit the budget of {outcome.budget} "
                "even at EMERGENCY; left unchanged (never cut silently)",
            )
            return
        before = len(plan.messages)
        plan.messages = outcome.messages
        plan.record(
            self.name,
            "messages",
            before,
            len(outcome.messages),
            f"tier {outcome.tier}: history {outcome.history_before} → {outcome.history_after} tokens "
            f"(saved {outcome.saved}, budget {outcome.budget})",
        )
