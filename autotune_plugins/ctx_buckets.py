"""ctx-buckets: snap num_ctx to a short ladder, and on reloading backends keep the loaded size.

Why: every distinct num_ctx reloads an Ollama / llama.cpp model (seconds of load time and a cold
prefix cache). Per backend+model we remember the size actually sent last and keep it while the need
fits: grow only when needed, shrink only after idle time or under high pressure, and only when the
needed bucket is at least two rungs smaller (hysteresis). A conversation then reloads at most once.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from autotune_core import ChatRequest, ChatResult, Choice, HookContext, KnobScope, Plan, StashKey, fold_stage, hookimpl
from autotune_core.buckets import bucket_index, snap_up


class CtxBucketsSettings(BaseModel):
    """``[plugins.ctx-buckets]``"""

    model_config = ConfigDict(extra="forbid")

    #: seconds without a request after which a smaller context may be loaded
    idle_shrink_seconds: float = Field(default=600.0, ge=0)
    #: shrink only when the needed bucket is at least this many rungs below the loaded one
    hysteresis_buckets: int = Field(default=2, ge=1)
    #: models remembered (LRU)
    max_models: int = Field(default=256, ge=1, le=65536)
    #: pressure tiers that allow an immediate shrink
    shrink_tiers: list[str] = Field(default_factory=lambda: ["high", "critical"])
    #: tokens of room for a conversation to grow into, added when a multi-message request loads or grows
    #: the context (so later turns fit without a reload); 0 disables
    growth_reserve: int = Field(default=512, ge=0)


@dataclass
class _Loaded:
    num_ctx: int
    last_used: float


@dataclass(frozen=True)
class _Decision:
    key: tuple[str, str]
    kind: str  # snap | first | keep | grow | shrink
    loaded: int | None
    plain: int


_DECISION: StashKey[_Decision] = StashKey("ctx-buckets.decision")


class CtxBucketsPlugin:
    """Bucket snapping with a reload-aware sticky policy; counts reloads avoided and resizes."""

    name = "ctx-buckets"
    Settings = CtxBucketsSettings

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._state: OrderedDict[tuple[str, str], _Loaded] = OrderedDict()
        #: requests served at the loaded size where plain snapping would have reloaded
        self.reloads_avoided = 0
        #: requests that changed an already loaded model's context (each one a reload)
        self.resizes = 0

    def loaded_size(self, backend: str, model: str) -> int | None:
        entry = self._state.get((backend, model))
        return entry.num_ctx if entry is not None else None

    @hookimpl
    @fold_stage("snap")
    def choose_num_ctx(
        self, ctx: HookContext, request: ChatRequest, plan: Plan, proposal: Choice[Any] | None
    ) -> Choice[int] | None:
        if proposal is None or proposal.value is None:
            return None
        settings = ctx.settings(CtxBucketsSettings)
        need = int(proposal.value)
        model_max = ctx.model.context_length if ctx.model is not None else None
        plain = snap_up(need, model_max)
        key = (ctx.backend_name, plan.model)
        if ctx.capabilities.scope("num_ctx") is not KnobScope.AT_LOAD:
            ctx.stash[_DECISION] = _Decision(key, "snap", None, plain)
            return self._answer(plan, need, plain, f"snapped {need} up to bucket {plain}")
        entry = self._state.get(key)
        loaded = ctx.loaded.get(plan.model) or (entry.num_ctx if entry is not None else None)
        if loaded is None or plain > loaded:
            size, extra = plain, ""
            if settings.growth_reserve and len(plan.messages) > 1:
                roomy = snap_up(need + settings.growth_reserve, model_max)
                if roomy <= max(plain, ctx.profile.max_context):
                    size, extra = roomy, f" (+{settings.growth_reserve} tokens for the conversation to grow into)"
            if loaded is None:
                ctx.stash[_DECISION] = _Decision(key, "first", None, size)
                return self._answer(
                    plan, need, size, f"snapped {need} up to bucket {size}{extra} (first load of {plan.model})"
                )
            ctx.stash[_DECISION] = _Decision(key, "grow", loaded, size)
            plan.flags["ctx_resize"] = f"{loaded}->{size}"
            return self._answer(
                plan, need, size, f"grow: need {need} exceeds the loaded {loaded}; bucket {size}{extra} (reload)"
            )
        idle = entry is not None and self.clock() - entry.last_used >= settings.idle_shrink_seconds
        pressed = ctx.pressure.tier in settings.shrink_tiers
        rungs = bucket_index(loaded, model_max) - bucket_index(plain, model_max)
        if (idle or pressed) and rungs >= settings.hysteresis_buckets:
            why = f"idle ≥ {settings.idle_shrink_seconds:g}s" if idle else f"pressure {ctx.pressure.tier}"
            ctx.stash[_DECISION] = _Decision(key, "shrink", loaded, plain)
            plan.flags["ctx_resize"] = f"{loaded}->{plain}"
            return self._answer(
                plan,
                need,
                plain,
                f"shrink: {why} and bucket {plain} is {rungs} rungs below the loaded {loaded} (reload)",
            )
        ctx.stash[_DECISION] = _Decision(key, "keep", loaded, plain)
        why = "" if plain == loaded else f"; bucket {plain} would reload (avoided, {self.reloads_avoided + 1} so far)"
        return self._answer(plan, need, loaded, f"keep the loaded {loaded}: need {need} fits{why}")

    def _answer(self, plan: Plan, need: int, value: int, reason: str) -> Choice[int]:
        """The fold records changes only; a decision that keeps the value is recorded here, so the trace
        always says why (e.g. a shrink back to exactly what was needed)."""
        if value == need:
            plan.record(self.name, "num_ctx", need, value, reason)
        return Choice(value, reason)

    @hookimpl
    def post_response(self, ctx: HookContext, request: ChatRequest, plan: Plan, result: ChatResult) -> None:
        """Remember the size really sent (after pressure and guard) and count what happened."""
        decision = ctx.stash.get(_DECISION)
        if decision is None or decision.kind == "snap" or plan.num_ctx is None:
            return
        settings = ctx.settings(CtxBucketsSettings)
        final = plan.num_ctx
        if decision.loaded is not None:
            if final != decision.loaded:
                self.resizes += 1
            elif decision.kind == "keep" and decision.plain != decision.loaded:
                self.reloads_avoided += 1
        self._state[decision.key] = _Loaded(final, self.clock())
        self._state.move_to_end(decision.key)
        while len(self._state) > settings.max_models:
            self._state.popitem(last=False)
