"""``auto-tune``: applies the resolved archetype parameters at plan time, each with its origin.

Where the values enter the plan (so optimization plugins and archetype values compose):

- ``pre_request`` (tryfirst): ``num_batch``, ``flash_attn``, ``parallel`` and the parameters the
  Plan has no field for (ubatch, threads, GPU layers, llama.cpp build) in ``plan.flags["archetype"]``.
  They are hardware *defaults*: plugins that run later (prefill-batch, flash-attention) may refine
  them, and their trace entries then show archetype value → their value.
- ``choose_num_ctx``: the archetype's ``num_ctx`` is a *propose* (tryfirst) default, so ctx-sizing,
  which sizes from the prompt, refines it; ``max_num_ctx`` is an *adjust* ceiling that only lowers.
- ``choose_kv_type``: *propose* (tryfirst), so kv-precision's per-profile choice (user intent)
  refines it and guards still run last.

A knob the client set explicitly (``request.options``) is never overridden. Switching the plugin
off (``autotune plugins disable auto-tune``) removes every archetype entry from the trace.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from autotune_core.archetypes import Archetype, Resolved, classify, profile_sets, resolve, section_for
from autotune_core.context import Choice, HookContext, StashKey, fold_stage
from autotune_core.markers import hookimpl
from autotune_core.messages import ChatRequest
from autotune_core.plan import Plan

PLUGIN_NAME = "auto-tune"
_LOOKUP: StashKey[tuple[str, tuple[Archetype, dict[str, Resolved], dict[str, str]]]] = StashKey("auto-tune.lookup")
#: plan knobs set in pre_request
PRE_REQUEST_KNOBS = ("num_batch", "flash_attn", "parallel")
#: names a client may use in ``options`` for each plan knob
CLIENT_NAMES: dict[str, tuple[str, ...]] = {
    "num_ctx": ("num_ctx", "n_ctx", "ctx_size"),
    "num_batch": ("num_batch", "n_batch"),
    "flash_attn": ("flash_attn", "flash_attention"),
    "kv_type": ("kv_type", "cache_type_k", "type_k"),
    "parallel": ("parallel", "num_parallel"),
}


class AutoTuneSettings(BaseModel):
    """``[plugins.auto-tune]``."""

    model_config = ConfigDict(extra="forbid")

    #: knobs never to apply (plan knobs such as "num_ctx", or "section.param" such as "embedded.n_threads")
    skip: list[str] = Field(default_factory=list)


class AutoTunePlugin:
    """Applies hardware-archetype profiles (bundled, downloaded, third-party, local) to every plan."""

    name = PLUGIN_NAME
    Settings = AutoTuneSettings

    def __init__(self) -> None:
        self._archetypes: dict[int, Archetype] = {}
        self._resolved: dict[tuple[Any, ...], tuple[dict[str, Resolved], dict[str, str]]] = {}

    def archetype(self, ctx: HookContext) -> Archetype:
        key = id(ctx.hardware)
        found = self._archetypes.get(key)
        if found is None:
            found = self._archetypes[key] = classify(ctx.hardware)
        return found

    def _lookup(self, ctx: HookContext, model: str) -> tuple[Archetype, dict[str, Resolved], dict[str, str]]:
        """(archetype, resolved knobs, each knob's origin as the trace says it) for this machine, backend and
        model (pure, no I/O). Four hooks ask per request: remembered in the request's stash, and across
        requests per machine, backend, model and profile sets."""
        memo = ctx.stash.get(_LOOKUP)
        if memo is not None and memo[0] == model:
            return memo[1]
        archetype = self.archetype(ctx)
        section = section_for(ctx.backend_name, ctx.capabilities.dialect)
        sets = ctx.host.archetype_sets
        key = (archetype.id, section, model, len(sets), tuple(id(item) for _, item in sets))
        cached = self._resolved.get(key)
        if cached is None:
            typed, _errors = profile_sets(sets)
            skip = set(ctx.settings(PLUGIN_NAME).model_dump()["skip"])
            values = {k: v for k, v in resolve(typed, archetype, section=section, model=model).items() if k not in skip}
            origins = {k: v.origin.describe(archetype.id) for k, v in values.items()}
            if len(self._resolved) > 256:
                self._resolved.clear()
            cached = self._resolved[key] = (values, origins)
        found = (archetype, *cached)
        ctx.stash[_LOOKUP] = (model, found)
        return found

    @staticmethod
    def _client_set(request: ChatRequest, knob: str) -> bool:
        options = request.options
        if not options:  # the common case: four hooks ask on every request
            return False
        return any(name in options for name in CLIENT_NAMES.get(knob, (knob,)))

    @hookimpl(tryfirst=True)
    def pre_request(self, ctx: HookContext, request: ChatRequest, plan: Plan) -> None:
        archetype, values, described = self._lookup(ctx, request.model)
        extras: dict[str, Any] = {}
        origins: dict[str, str] = {}
        for key, item in values.items():
            origin = described[key]
            if key in PRE_REQUEST_KNOBS:
                if not self._client_set(request, key):
                    value = item.value if key != "flash_attn" else bool(item.value)
                    plan.set(PLUGIN_NAME, key, value, origin)
                    origins[key] = origin
            elif "." in key:
                extras[key] = item.value
                origins[key] = origin
                plan.record(PLUGIN_NAME, key, None, item.value, origin)
        plan.flags["archetype"] = {"id": archetype.id, "params": extras, "origins": origins}
        backend_choice = values.get("llamacpp.backend")
        if backend_choice is not None:
            plan.advise(
                f"archetype {archetype.id}: use the llama.cpp {backend_choice.value} build "
                f"({backend_choice.origin.source})",
                knob="backend",
            )

    @hookimpl(tryfirst=True)
    @fold_stage("propose")
    def choose_num_ctx(
        self, ctx: HookContext, request: ChatRequest, plan: Plan, proposal: Choice[Any] | None
    ) -> Choice[Any] | None:
        _, values, described = self._lookup(ctx, request.model)
        item = values.get("num_ctx")
        if item is None or self._client_set(request, "num_ctx"):
            return None
        value = int(item.value)
        if ctx.model is not None and ctx.model.context_length:
            value = min(value, ctx.model.context_length)
        return Choice(value, described["num_ctx"])

    @hookimpl(specname="choose_num_ctx")
    @fold_stage("adjust")
    def num_ctx_ceiling(
        self, ctx: HookContext, request: ChatRequest, plan: Plan, proposal: Choice[Any] | None
    ) -> Choice[Any] | None:
        """``max_num_ctx``: lowers a larger proposal, never raises one (a second impl, adjust stage)."""
        _, values, described = self._lookup(ctx, request.model)
        item = values.get("max_num_ctx")
        if item is None or proposal is None or proposal.value is None or self._client_set(request, "num_ctx"):
            return None
        if int(proposal.value) <= int(item.value):
            return None
        return Choice(int(item.value), "ceiling: " + described["max_num_ctx"])

    @hookimpl(tryfirst=True)
    @fold_stage("propose")
    def choose_kv_type(
        self, ctx: HookContext, request: ChatRequest, plan: Plan, proposal: Choice[Any] | None
    ) -> Choice[Any] | None:
        _, values, described = self._lookup(ctx, request.model)
        item = values.get("kv_type")
        if item is None or self._client_set(request, "kv_type"):
            return None
        return Choice(str(item.value), described["kv_type"])
