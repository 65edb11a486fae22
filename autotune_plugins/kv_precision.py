"""kv-precision: propose the KV cache type by profile (fast q8_0; balanced and quality f16).

Why: q8_0 halves the KV cache with a negligible quality cost. On backends where the KV type is a
server setting (Ollama: ``OLLAMA_KV_CACHE_TYPE``) the proposal still flows through the fold, and the
core's reconcile step turns it into advice; the trace says so here, so nobody believes it was sent.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from autotune_core import ChatRequest, Choice, HookContext, KnobScope, Plan, fold_stage, hookimpl
from autotune_core.modelinfo import kv_type_bytes


def _check_kv(value: str) -> str:
    kv_type_bytes(value)  # raises ValueError naming the known types
    return value.lower()


class KVPrecisionSettings(BaseModel):
    """``[plugins.kv-precision]``"""

    model_config = ConfigDict(extra="forbid")

    #: KV type per profile
    by_profile: dict[str, str] = Field(default_factory=lambda: {"fast": "q8_0", "balanced": "f16", "quality": "f16"})
    #: one KV type for every profile (wins over by_profile)
    override: str | None = None
    #: honour a client's ``options.kv_type`` / ``options.kv_cache_type``
    allow_client: bool = True

    @field_validator("by_profile")
    @classmethod
    def _kv_types(cls, value: dict[str, str]) -> dict[str, str]:
        return {profile: _check_kv(kv) for profile, kv in value.items()}

    @field_validator("override")
    @classmethod
    def _kv_override(cls, value: str | None) -> str | None:
        return _check_kv(value) if value is not None else None


class KVPrecisionPlugin:
    """KV cache precision per profile; advice where the backend sets it server-wide."""

    name = "kv-precision"
    Settings = KVPrecisionSettings

    @hookimpl
    @fold_stage("propose")
    def choose_kv_type(
        self, ctx: HookContext, request: ChatRequest, plan: Plan, proposal: Choice[Any] | None
    ) -> Choice[str] | None:
        settings = ctx.settings(KVPrecisionSettings)
        client = request.options.get("kv_type") or request.options.get("kv_cache_type")
        if settings.allow_client and isinstance(client, str):
            try:
                value, why = _check_kv(client), "client asked for it (options.kv_type)"
            except ValueError:
                value, why = "", ""
            if value:
                return Choice(value, why + self._scope_note(ctx))
        if settings.override:
            value, why = settings.override, "configured override"
        else:
            value = settings.by_profile.get(ctx.profile.name, ctx.profile.kv_type)
            why = f"{ctx.profile.name} profile"
        return Choice(value, why + self._scope_note(ctx))

    @staticmethod
    def _scope_note(ctx: HookContext) -> str:
        support = ctx.capabilities.knobs.get("kv_type")
        scope = ctx.capabilities.scope("kv_type")
        if scope is KnobScope.SERVER_ENV:
            how = support.how if support is not None and support.how else "a server setting"
            return f" — advice only: {ctx.backend_name} sets the KV type server-wide ({how})"
        if scope is KnobScope.UNSUPPORTED:
            return f" — {ctx.backend_name} has no KV type setting; informational only"
        if scope is KnobScope.AT_LOAD:
            return " — applied at model load"
        return ""
