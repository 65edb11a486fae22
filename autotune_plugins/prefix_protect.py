"""prefix-protect: keep the system prompt on overflow (num_keep) and catch truncation after the fact.

Why: ``num_keep`` is not a prefix cache (prefix reuse is automatic) — it is what survives when the
context overflows and is shifted. Setting it to the system prompt's length protects the
instructions; it is re-capped after the final num_ctx (the original let it exceed the context).
After the answer we compare the backend's prompt-token count with ours and flag any truncation:
never a silent cut (Ollama truncates with a 200 OK: docs/backend-facts.md#ollama-versions). Counts that
exclude cached tokens (Ollama v0.30.0 exactly, Lemonade) are tolerated.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from autotune_core import ChatRequest, ChatResult, Choice, HookContext, KnobScope, Plan, StashKey, fold_stage, hookimpl
from autotune_core.messages import Message
from autotune_core.tokens import PER_MESSAGE_OVERHEAD

log = logging.getLogger("autotune.prefix-protect")

_PREFIX: StashKey[list[tuple[int, int]]] = StashKey("prefix-protect.prefix")


class PrefixProtectSettings(BaseModel):
    """``[plugins.prefix-protect]``"""

    model_config = ConfigDict(extra="forbid")

    #: set num_keep to the leading system messages' tokens
    protect_system_prompt: bool = True
    #: tokens num_keep always leaves free below num_ctx (the original's cap, docs/backend-facts.md#num_keep-reserve)
    keep_reserve: int = Field(default=512, ge=0)
    #: relative shortfall tolerated when our count is an estimate
    estimate_margin: float = Field(default=0.25, ge=0, lt=1)
    #: relative shortfall tolerated when our count is exact (template differences)
    exact_margin: float = Field(default=0.02, ge=0, lt=1)
    #: absolute shortfall always tolerated (BOS/EOS, template quirks)
    slack_tokens: int = Field(default=8, ge=0)
    #: models whose last prompt is remembered to explain cached-prefix counts
    max_models: int = Field(default=256, ge=1)


def message_fingerprint(ctx: HookContext, messages: list[Message]) -> list[tuple[int, int]]:
    """Per message: (hash, tokens), to measure the prefix a backend may have served from cache."""
    return [(hash((m.role, m.content, len(m.images))), ctx.tokens(m.content) + PER_MESSAGE_OVERHEAD) for m in messages]


class PrefixProtectPlugin:
    """num_keep = system prompt tokens (re-capped to the final context); truncation guard."""

    name = "prefix-protect"
    Settings = PrefixProtectSettings

    def __init__(self) -> None:
        #: truncations detected (the server's metrics read this)
        self.truncations = 0
        self._last: OrderedDict[tuple[str, str], list[tuple[int, int]]] = OrderedDict()

    def _settings(self, ctx: HookContext) -> PrefixProtectSettings:
        settings = ctx.settings(PrefixProtectSettings)
        return settings

    @hookimpl(trylast=True)  # after history compression and recall injection changed the messages
    def pre_request(self, ctx: HookContext, request: ChatRequest, plan: Plan) -> None:
        settings = self._settings(ctx)
        ctx.stash[_PREFIX] = message_fingerprint(ctx, plan.messages)
        if not settings.protect_system_prompt:
            return
        system: list[Message] = []
        for message in plan.messages:
            if message.role not in ("system", "developer"):
                break
            system.append(message)
        if not system:
            return
        scope = ctx.capabilities.scope("num_keep")
        tokens = 1 + sum(ctx.tokens(m.content) + PER_MESSAGE_OVERHEAD for m in system)
        if scope is not KnobScope.PER_REQUEST:
            plan.record(
                self.name,
                "num_keep",
                None,
                None,
                f"{ctx.backend_name} cannot keep tokens on overflow ({scope.value}); the system prompt "
                f"({tokens} tokens) is protected only by the truncation check",
            )
            return
        plan.set(
            self.name,
            "num_keep",
            tokens,
            f"keep the system prompt ({len(system)} message(s), ~{tokens} tokens) when the context overflows",
        )

    @hookimpl(trylast=True)
    @fold_stage("guard")
    def choose_kv_type(self, ctx: HookContext, request: ChatRequest, plan: Plan, proposal: Choice[Any] | None) -> None:
        """Re-cap num_keep now that num_ctx is final (the kv fold runs after it); never changes the KV type."""
        if plan.num_keep is None or plan.num_ctx is None:
            return
        cap = max(0, plan.num_ctx - self._settings(ctx).keep_reserve)
        if plan.num_keep > cap:
            plan.set(
                self.name,
                "num_keep",
                cap or None,
                f"re-capped to the final num_ctx {plan.num_ctx} − {self._settings(ctx).keep_reserve}",
            )

    @hookimpl
    def post_response(self, ctx: HookContext, request: ChatRequest, plan: Plan, result: ChatResult) -> None:
        settings = self._settings(ctx)
        key = (ctx.backend_name, plan.model)
        current = ctx.stash.get(_PREFIX) or []
        previous = self._last.get(key, [])
        self._last[key] = current
        self._last.move_to_end(key)
        while len(self._last) > settings.max_models:
            self._last.popitem(last=False)
        expected = plan.prompt_tokens
        reported = result.usage.prompt_tokens
        if not expected or reported <= 0:
            return  # nothing to compare
        if result.usage.cached_tokens is not None:
            seen, cache_note = reported + result.usage.cached_tokens, f" + {result.usage.cached_tokens} cached"
        elif ctx.capabilities.prefix_cache:
            # the count may exclude a prefix served from cache: at most the prefix shared with the last prompt
            shared = 0
            for now, before in zip(current, previous, strict=False):
                if now[0] != before[0]:
                    break
                shared += now[1]
            seen, cache_note = reported + shared, f" + up to {shared} possibly cached" if shared else ""
        else:
            seen, cache_note = reported, ""
        margin = settings.exact_margin if plan.prompt_tokens_exact else settings.estimate_margin
        limit = expected * (1 - margin) - settings.slack_tokens
        if seen >= limit:
            return
        kind = "counted" if plan.prompt_tokens_exact else "estimated"
        self.truncations += 1
        plan.flags["truncated"] = {
            "expected": expected,
            "reported": reported,
            "exact": plan.prompt_tokens_exact,
            "num_ctx": plan.num_ctx,
            "backend": ctx.backend_name,
        }
        plan.advise(
            f"{plan.model}: the backend processed {reported}{cache_note} prompt tokens but the prompt has "
            f"{expected} ({kind}): it was probably truncated; raise the context or shorten the prompt"
        )
        log.warning(
            "truncation on %s/%s: backend saw %d%s prompt tokens, %s %d (num_ctx %s)",
            ctx.backend_name,
            plan.model,
            reported,
            cache_note,
            kind,
            expected,
            plan.num_ctx,
        )
