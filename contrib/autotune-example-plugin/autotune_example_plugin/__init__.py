"""max-context-cap: caps ``num_ctx`` at a configured ceiling (an example third-party autotune plugin).

Why a cap: on a shared machine you may want no model to take more than, say, 4096 tokens of KV cache,
whatever the sizing plugins would propose. The cap runs in the ``adjust`` stage so that it sees the
sized and bucket-snapped proposal, and guards (``guard`` stage) still get the last word.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from autotune_core import ChatRequest, Choice, HookContext, Plan, fold_stage, hookimpl

__version__ = "0.1.0"


class MaxContextCapSettings(BaseModel):
    """``[plugins.max-context-cap]`` in the autotune config file."""

    model_config = ConfigDict(extra="forbid")

    ceiling: int | None = Field(default=None, ge=256, description="largest num_ctx for every model; unset = no cap")
    per_model: dict[str, Annotated[int, Field(ge=256)]] = Field(
        default_factory=dict, description="per-model ceilings (model name -> tokens), override `ceiling`"
    )

    def ceiling_for(self, model: str) -> int | None:
        return self.per_model.get(model, self.ceiling)


class MaxContextCapPlugin:
    """Caps num_ctx at a configured ceiling (adjust stage; guards still run after it)."""

    name = "max-context-cap"
    Settings = MaxContextCapSettings

    @hookimpl
    @fold_stage("adjust")
    def choose_num_ctx(
        self, ctx: HookContext, request: ChatRequest, plan: Plan, proposal: Choice[int] | None
    ) -> Choice[int] | None:
        settings = ctx.settings(MaxContextCapSettings)
        ceiling = settings.ceiling_for(request.model)
        if ceiling is None:
            return None
        if proposal is None:
            # nobody sized the context: the backend default could be anything, so pin the cap
            return Choice(ceiling, f"no proposal; capped at {ceiling}")
        if proposal.value <= ceiling:
            return None
        where = "per-model ceiling" if request.model in settings.per_model else "ceiling"
        return Choice(ceiling, f"{where} {ceiling} (was {proposal.value})")
