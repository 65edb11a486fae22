"""The essential core plugin: applies the profile's request defaults. It cannot be disabled."""

from __future__ import annotations

from .context import HookContext
from .markers import hookimpl
from .messages import ChatRequest
from .plan import Plan


class CorePlugin:
    """Profile defaults: the output budget and sampling defaults, only where the client sent none."""

    name = "core"
    tier = "essential"

    @hookimpl(tryfirst=True)
    def pre_request(self, ctx: HookContext, request: ChatRequest, plan: Plan) -> None:
        if request.max_tokens is not None:
            plan.max_tokens = request.max_tokens
        sent = request.sampling()
        sent.update({key: value for key, value in request.options.items() if key in ctx.profile.sampling})
        defaults = {key: value for key, value in ctx.profile.sampling.items() if key not in sent}
        if defaults:
            plan.sampling.update(defaults)
            plan.record("core", "sampling", None, defaults, f"{ctx.profile.name} profile defaults (client sent none)")
