"""flash-attention: turn flash attention on where the backend takes it at load; advice elsewhere.

Why: flash attention cuts attention memory and speeds up long prompts on a GPU, and llama.cpp *requires* it
for a quantized V cache. On Ollama it is a server setting (``OLLAMA_FLASH_ATTENTION``), never a request
option — sending it (as the original did) is silently ignored — so there it is advice only.

It also changes the order of floating-point sums, so greedy (temperature 0) answers can differ: on the
embedded Gemma 3 270M on a CPU, "def fibonacci(n):" continued differently after about 20 tokens with it on
(tests/optimizations/test_opt_fidelity_embedded.py). So by default ("auto") it is asked for only where it
pays: a machine with a GPU, or a quantized V cache that needs it; ``enable = true`` asks for it everywhere.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from autotune_core import ChatRequest, Choice, HookContext, KnobScope, Plan, fold_stage, hookimpl

#: KV types that need no flash attention
UNQUANTIZED = frozenset({"f32", "f16", "bf16"})


class FlashAttentionSettings(BaseModel):
    """``[plugins.flash-attention]``"""

    model_config = ConfigDict(extra="forbid")

    #: "auto": ask for it on machines with a GPU; True: everywhere; False: never (it is still enabled when a
    #: quantized V cache needs it)
    enable: bool | Literal["auto"] = "auto"


def _how(ctx: HookContext) -> str:
    """How to turn it on, e.g. "OLLAMA_FLASH_ATTENTION=1 and restart `ollama serve`"."""
    support = ctx.capabilities.knobs.get("flash_attn")
    if support is None or not support.how:
        return f"flash attention on in the {ctx.backend_name} server's flags"
    return support.how if "=" in support.how else f"{support.how}=1"


class FlashAttentionPlugin:
    """flash_attn on at load; server-env backends get advice, never a request option."""

    name = "flash-attention"
    Settings = FlashAttentionSettings

    @hookimpl
    def pre_request(self, ctx: HookContext, request: ChatRequest, plan: Plan) -> None:
        settings = ctx.settings(FlashAttentionSettings)
        if not settings.enable:
            return
        scope = ctx.capabilities.scope("flash_attn")
        if scope in (KnobScope.AT_LOAD, KnobScope.PER_REQUEST):
            if settings.enable == "auto" and ctx.hardware.primary_gpu is None:
                plan.record(
                    self.name,
                    "flash_attn",
                    None,
                    None,
                    "not asked for on a CPU-only machine (little gain there, and it changes greedy answers); "
                    "enable = true to ask anyway",
                )
                return
            plan.set(self.name, "flash_attn", True, f"flash attention on ({scope.value})")
        elif scope is KnobScope.SERVER_ENV:
            how = _how(ctx)
            plan.advise(f"enable flash attention on {ctx.backend_name}: set {how} (server-wide)", knob="flash_attn")
            plan.record(
                self.name,
                "flash_attn",
                None,
                None,
                f"advice only: {ctx.backend_name} sets flash attention server-wide ({how}); not sent",
            )

    @hookimpl(trylast=True)
    @fold_stage("guard")
    def choose_kv_type(self, ctx: HookContext, request: ChatRequest, plan: Plan, proposal: Choice[Any] | None) -> None:
        """A quantized V cache needs flash attention; never changes the KV type itself."""
        kv = proposal.value if proposal is not None else None
        if not kv or kv in UNQUANTIZED:
            return
        kv_scope = ctx.capabilities.scope("kv_type")
        fa_scope = ctx.capabilities.scope("flash_attn")
        if kv_scope in (KnobScope.AT_LOAD, KnobScope.PER_REQUEST) and fa_scope in (
            KnobScope.AT_LOAD,
            KnobScope.PER_REQUEST,
        ):
            if plan.flash_attn is not True:
                plan.set(self.name, "flash_attn", True, f"required: a quantized V cache ({kv}) needs flash attention")
        elif fa_scope is KnobScope.SERVER_ENV:
            plan.advise(
                f"a quantized KV cache ({kv}) needs flash attention: set {_how(ctx)} on {ctx.backend_name}",
                knob="flash_attn",
            )
