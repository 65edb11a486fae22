"""sampling-presets (opt-in): fill sampling fields the client left out from a named preset. It CHANGES ANSWERS.

Why opt-in: sampling is the model's and the client's. Ollama models ship their own recommended sampling in
the Modelfile (qwen3: temperature 0.6, top_k 20, top_p 0.95), and a proxy that injects its own replaces it
and changes what the model says; a repeat penalty also costs time per token on large vocabularies
(~1.7 ms per token on Gemma 3's 262k vocabulary with llama-server, docs/benchmarks.md). So autotune sends no
sampling by default. A user who wants the original autotune's presets turns this on, and every request's
trace says that sampling was added and that it changes answers.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from autotune_core import ChatRequest, HookContext, Plan, hookimpl

#: the original autotune's per-profile sampling (its fast / balanced / quality profiles: docs/backend-facts.md#profiles)
PRESETS: dict[str, dict[str, float]] = {
    "precise": {"temperature": 0.1, "top_p": 0.9, "repeat_penalty": 1.15},
    "balanced": {"temperature": 0.7, "top_p": 0.95, "repeat_penalty": 1.08},
    "creative": {"temperature": 0.8, "top_p": 0.95, "repeat_penalty": 1.05},
}
#: the sampling names a client may send as Ollama ``options``, beside the typed request fields
_OPTION_NAMES = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "repeat_penalty",
)


class SamplingPresetsSettings(BaseModel):
    """``[plugins.sampling-presets]``"""

    model_config = ConfigDict(extra="forbid")

    #: which preset fills the fields a client left out
    preset: Literal["precise", "balanced", "creative"] = "balanced"
    #: a preset per model (model name -> preset), over ``preset``
    models: dict[str, Literal["precise", "balanced", "creative"]] = Field(default_factory=dict)


class SamplingPresetsPlugin:
    """Opt-in: sampling from a preset where the client sent none. Changes answers; traced on every request."""

    name = "sampling-presets"
    tier = "opt-in"
    Settings = SamplingPresetsSettings

    @hookimpl
    def pre_request(self, ctx: HookContext, request: ChatRequest, plan: Plan) -> None:
        settings = ctx.settings(SamplingPresetsSettings)
        preset = settings.models.get(plan.model, settings.preset)
        sent: dict[str, Any] = request.sampling()
        sent.update({key: value for key, value in request.options.items() if key in _OPTION_NAMES})
        added = {key: value for key, value in PRESETS[preset].items() if key not in sent}
        if not added:
            plan.record(
                self.name,
                "sampling",
                None,
                None,
                f"preset {preset!r}: the client set every field it covers; nothing added",
            )
            return
        plan.sampling.update(added)
        plan.record(
            self.name,
            "sampling",
            None,
            added,
            f"preset {preset!r} added {', '.join(sorted(added))} (opt-in; this changes answers: the "
            "model's own sampling defaults no longer apply to these fields)",
        )
