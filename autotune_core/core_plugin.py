"""The essential core plugin: carries the request's own output budget onto the plan. It cannot be disabled.

It adds nothing the client did not ask for: no sampling (the model's own defaults apply) and no output
limit. Sampling presets are the opt-in ``sampling-presets`` plugin's, which says on every request that it
changes answers.
"""

from __future__ import annotations

from .context import HookContext
from .markers import hookimpl
from .messages import ChatRequest
from .plan import Plan


class CorePlugin:
    """The request's own max_tokens onto the plan (pinned already when the client's values are respected)."""

    name = "core"
    tier = "essential"

    @hookimpl(tryfirst=True)
    def pre_request(self, ctx: HookContext, request: ChatRequest, plan: Plan) -> None:
        if request.max_tokens is not None and plan.max_tokens is None:
            plan.max_tokens = request.max_tokens
