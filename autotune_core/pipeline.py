"""The request path: resolve → gather facts → pre_request → choose_num_ctx → choose_kv_type →
reconcile with the backend's capabilities → send → post_response.

Front doors (server, CLI, library) all go through :class:`Pipeline`, so a request is tuned the
same way whichever door it came in by.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from .backend import Backend, Capabilities, reconcile_plan
from .context import Choice, HookContext
from .errors import ContextOverflow
from .hardware import Pressure
from .host import PluginHost
from .messages import ChatRequest, ChatResult, StreamChunk, Usage
from .modelinfo import ModelInfo
from .plan import Plan
from .precedence import pins_for
from .profiles import get_profile
from .resolver import ModelResolver
from .tokens import estimate_message_tokens

log = logging.getLogger("autotune.pipeline")

MODEL_INFO_TTL = 300.0
#: On a server whose context is fixed at its start (llama-server, vLLM), an exact token count only matters
#: near that context. Below this many estimated tokens it cannot change a decision: even at twice the
#: estimate (code, non-Latin text) the prompt sits far inside the smallest context such servers run (2048).
#: The count costs one or two round trips to the server (~6 ms on llama-server), on every request.
EXACT_COUNT_FROM_TOKENS = 512
#: the pressure hooks see before the sampler's first sample (or with no sampler): one object, so plugins that
#: remember work per pressure sample (noswap-guard's budget) see the same sample on every request
_NO_SAMPLE = Pressure()


class _Missing:
    """Marks "look it up" (None is a real answer: the backend could not tell)."""


_MISSING = _Missing()


@dataclass
class Prepared:
    """A planned request, ready to send."""

    request: ChatRequest
    plan: Plan
    ctx: HookContext
    backend: Backend
    skip: frozenset[str]
    planning_ms: float
    #: of planning_ms, the time spent waiting on the backend (model info, token counts): upstream, not overhead
    upstream_ms: float = 0.0


def worth_counting(caps: Capabilities, estimate: int) -> bool:
    """Whether to ask the backend for an exact prompt token count instead of using the estimate.

    Always when the count sizes a context the backend applies (per request or at load); on a server with a
    fixed context only for prompts large enough to come near it (:data:`EXACT_COUNT_FROM_TOKENS`).
    """
    if not caps.can_tokenize:
        return False
    return caps.honours("num_ctx") or estimate >= EXACT_COUNT_FROM_TOKENS


class Pipeline:
    """Plans and runs requests for one host."""

    def __init__(self, host: PluginHost) -> None:
        self.host = host
        self.resolver = ModelResolver(host)
        self._info: dict[tuple[str, str], tuple[float, ModelInfo | None]] = {}

    async def model_info(self, backend: Backend, model: str) -> ModelInfo | None:
        key = (backend.name, model)
        cached = self._info.get(key)
        if cached is not None and time.monotonic() - cached[0] < MODEL_INFO_TTL:
            return cached[1]
        try:
            info: ModelInfo | None = await backend.model_info(model)
        except Exception as exc:
            log.warning("model info for %s on %s unavailable: %s", model, backend.name, exc)
            info = None
        self._info[key] = (time.monotonic(), info)
        return info

    def skip_for(self, model: str) -> frozenset[str]:
        override = self.host.config.server.models.get(model)
        if override is None:
            return frozenset()
        skip = set(override.disabled)
        if override.plugins is not None:
            skip |= {name for name in self.host.records if name not in override.plugins}
        skip.discard("core")
        return frozenset(skip)

    def profile_for(self, request: ChatRequest) -> str:
        override = self.host.config.server.models.get(request.model)
        return (
            request.profile or (override.profile if override and override.profile else None) or self.host.config.profile
        )

    async def resolve(self, request: ChatRequest) -> tuple[ChatRequest, Backend]:
        """Which backend serves the request, and the request under the model name that backend knows."""
        backend, upstream_model = await self.resolver.resolve(request.model)
        if upstream_model != request.model:
            request = request.model_copy(update={"model": upstream_model})
        return request, backend

    async def prepare(self, request: ChatRequest) -> Prepared:
        """Resolve and plan: what a library user calls before :meth:`run` or :meth:`stream`."""
        request, backend = await self.resolve(request)
        return await self.plan(request, backend)

    async def plan(
        self, request: ChatRequest, backend: Backend, info: ModelInfo | _Missing | None = _MISSING
    ) -> Prepared:
        """Run the request hooks for a resolved request (the server, ``autotune plan`` and the library all come
        here). The model's architecture is looked up (cached) unless given."""
        started = time.perf_counter()
        info_ms = 0.0
        if isinstance(info, _Missing):
            info = await self.model_info(backend, request.model)
            info_ms = (time.perf_counter() - started) * 1000
        profile = get_profile(self.profile_for(request))
        caps = backend.capabilities()
        plan = Plan(model=request.model, backend=backend.name, profile=profile.name, messages=list(request.messages))
        self.pin(plan, request)
        ctx = HookContext(
            host=self.host,
            hardware=self.host.hardware,
            capabilities=caps,
            backend_name=backend.name,
            profile=profile,
            model=info,
            pressure=self.host.pressure or _NO_SAMPLE,
        )
        skip = self.skip_for(request.model)
        await self.host.hooks.pre_request(ctx=ctx, request=request, plan=plan, skip=skip)
        exact = None
        estimate = estimate_message_tokens(plan.messages)
        tokenize_started = time.perf_counter()
        if worth_counting(caps, estimate):
            with contextlib.suppress(Exception):
                exact = await backend.count_tokens(request.model, request, plan)
        tokenize_ms = (time.perf_counter() - tokenize_started) * 1000
        plan.prompt_tokens = exact if exact is not None else estimate
        plan.prompt_tokens_exact = exact is not None
        num_ctx = self.host.hooks.choose_num_ctx(ctx=ctx, request=request, plan=plan, skip=skip)
        plan.num_ctx = num_ctx.value if num_ctx is not None else None
        kv: Choice[str] | None = self.host.hooks.choose_kv_type(ctx=ctx, request=request, plan=plan, skip=skip)
        plan.kv_type = kv.value if kv is not None else None
        self._check_fit(plan)
        reconcile_plan(plan, caps, backend=backend.name)
        return Prepared(
            request=request,
            plan=plan,
            ctx=ctx,
            backend=backend,
            skip=skip,
            planning_ms=(time.perf_counter() - started) * 1000,
            upstream_ms=tokenize_ms + info_ms,
        )

    def pin(self, plan: Plan, request: ChatRequest) -> None:
        """Fix the knobs the client (or the model's config) set, before any hook runs (precedence.py)."""
        override = self.host.config.server.models.get(request.model)
        plan.pins = pins_for(request, override, self.host.config.client_overrides)
        for pin in plan.pins.values():
            setattr(plan, pin.knob, pin.value)
            plan.record(pin.source, pin.knob, None, pin.value, pin.describe())

    @staticmethod
    def _check_fit(plan: Plan) -> None:
        """Never a silent cut: a prompt that cannot fit the context it will get is refused.

        Where the context is the client's own (pinned), the request goes as asked, as it would without
        autotune, and the response warns that the model server will cut the prompt.
        """
        if plan.num_ctx is None or plan.prompt_tokens is None:
            return
        ctx_pinned = "num_ctx" in plan.pins and plan.num_ctx == plan.pins["num_ctx"].value
        if plan.prompt_tokens >= plan.num_ctx:
            if ctx_pinned:
                plan.warn(
                    f"the prompt is about {plan.prompt_tokens} tokens but num_ctx is {plan.num_ctx} "
                    f"({plan.pins['num_ctx'].describe()}): the model server will drop the start of it"
                )
                return
            raise ContextOverflow(
                f"the prompt is about {plan.prompt_tokens} tokens but the context for {plan.model} is "
                f"{plan.num_ctx}; shorten the conversation or enable the context-compressor plugin"
            )
        # An explicit max_tokens that overruns the context would make the server shift the context
        # mid-answer (dropping prompt tokens): cap the output to the room left, visibly. When the client chose
        # both the context and the output budget, that combination is theirs and goes as asked.
        room = plan.num_ctx - plan.prompt_tokens
        if plan.max_tokens is not None and plan.max_tokens > room and not ctx_pinned:
            plan.flags["output_capped"] = {"requested": plan.max_tokens, "room": room}
            plan.set(
                "core",
                "max_tokens",
                room,
                f"only {room} tokens of the {plan.num_ctx} context are left after "
                f"the prompt ({plan.prompt_tokens}); output capped, prompt kept",
                safety=True,
            )

    async def run(self, prepared: Prepared, *, finish: bool = True) -> ChatResult:
        """Send a non-streaming request and run post_response (``finish=False``: the caller runs
        :meth:`finish` itself, e.g. after the answer went out; on failure it always runs here)."""
        started = time.perf_counter()
        try:
            result = await prepared.backend.chat(prepared.request, prepared.plan)
        except BaseException:
            # as for streams, post_response runs on failure and cancellation too, so plugins that
            # changed process state in pre_request (os-tuner) restore it; finish_reason "error"
            failed = ChatResult(model=prepared.request.model, backend=prepared.backend.name, finish_reason="error")
            failed.timings.total_ms = (time.perf_counter() - started) * 1000
            with contextlib.suppress(Exception):
                await asyncio.shield(self.finish(prepared, failed))
            raise
        if result.timings.total_ms is None:
            result.timings.total_ms = (time.perf_counter() - started) * 1000
        result.warnings = list(prepared.plan.warnings)
        if finish:
            await self.finish(prepared, result)
        return result

    async def stream(self, prepared: Prepared) -> AsyncIterator[StreamChunk]:
        """Stream chunks through unchanged; assemble the result for post_response at the end.

        If the consumer stops early (client gone), the upstream iterator is closed, which cancels
        the upstream request, and post_response still runs with what was received.
        """
        started = time.perf_counter()
        text: list[str] = []
        result = ChatResult(model=prepared.request.model, backend=prepared.backend.name, finish_reason=None)
        upstream = prepared.backend.stream_chat(prepared.request, prepared.plan)
        first = True
        try:
            async for chunk in upstream:
                if first:
                    first = False
                    result.timings.ttft_ms = (time.perf_counter() - started) * 1000
                if chunk.content:
                    text.append(chunk.content)
                if chunk.tool_calls:
                    result.tool_calls.extend(chunk.tool_calls)
                if chunk.done:
                    if prepared.plan.warnings:
                        chunk.warnings = list(prepared.plan.warnings)
                    result.finish_reason = chunk.finish_reason or "stop"
                    result.usage = chunk.usage or Usage()
                    if chunk.timings is not None:
                        ttft = result.timings.ttft_ms
                        result.timings = chunk.timings
                        result.timings.ttft_ms = chunk.timings.ttft_ms or ttft
                yield chunk
        finally:
            aclose = getattr(upstream, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
            result.content = "".join(text)
            if result.timings.total_ms is None:
                result.timings.total_ms = (time.perf_counter() - started) * 1000
            # post_response must run even when the client went away; shield it from cancellation
            with contextlib.suppress(Exception):
                await asyncio.shield(self.finish(prepared, result))

    async def finish(self, prepared: Prepared, result: ChatResult) -> None:
        await self.host.hooks.post_response(
            ctx=prepared.ctx, request=prepared.request, plan=prepared.plan, result=result, skip=prepared.skip
        )
