"""prefill-batch: one num_batch per model, chosen at its first load and never varied per request.

Why: a bigger batch speeds up prompt processing, but on Ollama / llama.cpp num_batch is a load-time
option and every change reloads the model (the original switched 1024 ↔ 256 with RAM use, reloading
each time; docs/backend-facts.md#ollama-reloads).
We pick 1024 (256 only when a model loads under critical pressure) and remember it.
"""

from __future__ import annotations

from collections import OrderedDict

from pydantic import BaseModel, ConfigDict, Field

from autotune_core import ChatRequest, ChatResult, HookContext, KnobScope, Plan, StashKey, hookimpl

_CHOSEN: StashKey[int] = StashKey("prefill-batch.chosen")


class PrefillBatchSettings(BaseModel):
    """``[plugins.prefill-batch]``"""

    model_config = ConfigDict(extra="forbid")

    num_batch: int = Field(default=1024, ge=1, le=65536)
    #: used instead when a model is loaded under critical memory pressure
    low_memory_num_batch: int = Field(default=256, ge=1, le=65536)
    #: per-model fixed values, e.g. {"llama3.2:1b" = 512}
    models: dict[str, int] = Field(default_factory=dict)
    max_models: int = Field(default=256, ge=1)


class PrefillBatchPlugin:
    """num_batch fixed per model (1024; 256 if first loaded under critical pressure)."""

    name = "prefill-batch"
    Settings = PrefillBatchSettings

    def __init__(self) -> None:
        self._chosen: OrderedDict[tuple[str, str], int] = OrderedDict()

    def chosen(self, backend: str, model: str) -> int | None:
        return self._chosen.get((backend, model))

    @hookimpl
    def pre_request(self, ctx: HookContext, request: ChatRequest, plan: Plan) -> None:
        scope = ctx.capabilities.scope("num_batch")
        if scope not in (KnobScope.AT_LOAD, KnobScope.PER_REQUEST):
            return  # not settable here: leave the server's own batch size alone
        settings = ctx.settings(PrefillBatchSettings)
        key = (ctx.backend_name, plan.model)
        remembered = self._chosen.get(key)
        if remembered is not None:
            value, why = remembered, "fixed for this model since its first load (a change would reload it)"
        elif plan.model in settings.models:
            value, why = settings.models[plan.model], "configured for this model"
        elif plan.num_batch is not None:
            value, why = (
                plan.num_batch,
                "adopted the value an earlier plugin chose (e.g. the hardware archetype); kept for this model",
            )
        elif ctx.pressure.tier == "critical" and plan.model not in ctx.loaded:
            value, why = settings.low_memory_num_batch, "loading under critical memory pressure; kept for this model"
        else:
            value, why = settings.num_batch, "default prefill batch; kept for this model"
        ctx.stash[_CHOSEN] = value
        plan.set(self.name, "num_batch", value, why)

    @hookimpl
    def post_response(self, ctx: HookContext, request: ChatRequest, plan: Plan, result: ChatResult) -> None:
        """Remember the value once a request really went out with it."""
        value = ctx.stash.get(_CHOSEN)
        if value is None:
            return
        settings = ctx.settings(PrefillBatchSettings)
        key = (ctx.backend_name, plan.model)
        self._chosen.setdefault(key, value)
        self._chosen.move_to_end(key)
        while len(self._chosen) > settings.max_models:
            self._chosen.popitem(last=False)
