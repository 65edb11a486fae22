"""session-advisor: watches the machine and the answers, scores health 0–100, and acts.

A background task samples RAM, swap, CPU, heat and GPU memory (every ``interval`` s, in a worker
thread); post_response adds TTFT and tokens/s. When the state is ACTION_NEEDED or CRITICAL it takes the
next step of an ordered list (at most one per 20 s cooldown): halve the recommended concurrency, lower
the context ceiling, lower the KV type for the next load, unload idle models, then advice (smaller
quantization, smaller model). After 90 s of stability it undoes its steps one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from autotune_core import ChatRequest, ChatResult, Choice, HookContext, Plan, PluginHost, fold_stage, hookimpl
from autotune_core.modelinfo import kv_type_bytes
from autotune_core.profiles import get_profile

from .health import Action, Advisor, Sample, label
from .sampler import SystemSampler

log = logging.getLogger("autotune.advisor")

__all__ = ["Advisor", "Sample", "SessionAdvisorPlugin"]


class AdvisorSettings(BaseModel):
    """``[plugins.session-advisor]``."""

    model_config = ConfigDict(extra="forbid")

    interval: float = Field(default=1.0, ge=0.05, le=60)
    cooldown: float = Field(default=20.0, ge=0)
    stable_after: float = Field(default=90.0, ge=0)
    #: act on the knobs (else only score, state and advice)
    act: bool = True
    #: models unused for this long are unloaded by the unload step
    idle_unload_seconds: float = Field(default=120.0, ge=0)


class SessionAdvisorPlugin:
    """Health score, states and ordered actions (cooldown 20 s, scale-up after 90 s of stability)."""

    name = "session-advisor"
    Settings = AdvisorSettings

    def __init__(self, *, sampler: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.sampler = sampler
        self.clock = clock
        self.advisor: Advisor | None = None
        self.host: PluginHost | None = None
        self.last_used: dict[tuple[str, str], float] = {}
        self.unloaded: list[str] = []
        self._task: asyncio.Task[None] | None = None

    def _settings(self, host: PluginHost) -> AdvisorSettings:
        return host.settings_of(AdvisorSettings)

    def ensure(self, host: PluginHost) -> Advisor:
        if self.advisor is None:
            self.host = host
            settings = self._settings(host)
            profile = get_profile(host.config.profile)
            self.advisor = Advisor(
                clock=self.clock,
                cooldown=settings.cooldown,
                stable_after=settings.stable_after,
                max_concurrency=host.config.server.max_concurrent,
                context=profile.max_context,
                kv_type=profile.kv_type,
            )
        return self.advisor

    # -- the sampler task --------------------------------------------------------------------------

    @hookimpl
    async def on_startup(self, host: PluginHost) -> None:
        self.ensure(host)
        if self.sampler is None:
            self.sampler = await asyncio.to_thread(SystemSampler)
        self._task = asyncio.create_task(self._run(self._settings(host).interval), name="session-advisor")

    @hookimpl
    async def on_shutdown(self, host: PluginHost) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self, interval: float) -> None:
        while True:
            try:
                await self.tick_once()
            except Exception as exc:  # a bad reading must not kill the sampler
                log.warning("session-advisor sample failed: %s", exc)
            await asyncio.sleep(interval)

    async def tick_once(self, sample: Sample | None = None) -> list[Action]:
        """Sample (in a thread), score, act; then carry out the async part (unloading)."""
        assert self.host is not None, "call ensure(host) or start the host first"
        advisor = self.ensure(self.host)
        # halve what the server really lets through (a batching server's slots + lookahead), not the config's 2
        advisor.rebase_concurrency(self.host.concurrency_base)
        reading: Sample = sample if sample is not None else await asyncio.to_thread(self.sampler.sample)
        actions = advisor.tick(reading)
        # the server's queue reads this cap at every admission: a "reduce concurrency" action is real
        self.host.cap_concurrency(self.name, advisor.knobs.concurrency, f"{advisor.state}, health {advisor.score}")
        for action in actions:
            log.info(
                "session-advisor %s: %s (%s; health %d, %s)",
                action.kind,
                action.detail,
                action.why,
                advisor.score,
                advisor.state,
            )
        if advisor.pending_unload:
            advisor.pending_unload = False
            if self._settings(self.host).act:
                await self._unload_idle()
        return actions

    async def _unload_idle(self) -> None:
        assert self.host is not None
        limit = self._settings(self.host).idle_unload_seconds
        now = self.clock()
        for (backend_name, model), used in list(self.last_used.items()):
            if now - used < limit:
                continue
            try:
                if await self.host.backend(backend_name).unload(model):
                    self.unloaded.append(f"{backend_name}/{model}")
                    self.last_used.pop((backend_name, model), None)
            except Exception as exc:
                log.warning("session-advisor could not unload %s on %s: %s", model, backend_name, exc)

    # -- request hooks ----------------------------------------------------------------------------

    @hookimpl
    def post_response(self, ctx: HookContext, request: ChatRequest, plan: Plan, result: ChatResult) -> None:
        advisor = self.ensure(ctx.host)
        self.last_used[(ctx.backend_name, request.model)] = self.clock()
        if result.finish_reason in (None, "error"):
            return
        advisor.observe_response(
            result.timings.ttft_ms,
            result.timings.tokens_per_second(result.usage.completion_tokens),
            model=request.model,
            quantization=ctx.model.quantization if ctx.model else None,
            # this request's slot is released before post_response runs: the others, plus this one
            concurrency=(ctx.host.requests_in_flight or 0) + 1,
        )

    @hookimpl
    @fold_stage("adjust")
    def choose_num_ctx(
        self, ctx: HookContext, request: ChatRequest, plan: Plan, proposal: Choice[Any] | None
    ) -> Choice[Any] | None:
        """The advisor's context ceiling, never below the prompt plus its output reserve."""
        advisor = self.advisor
        if advisor is None or proposal is None or not self._settings(ctx.host).act:
            return None
        ceiling = advisor.knobs.context_ceiling
        if ceiling is None or proposal.value <= ceiling:
            return None
        floor = (plan.prompt_tokens or 0) + (plan.max_tokens or ctx.profile.max_new_tokens)
        value = max(ceiling, min(floor, proposal.value))
        if value >= proposal.value:
            return None
        return Choice(value, f"session advisor ceiling {ceiling} ({advisor.state}, health {advisor.score})")

    @hookimpl
    @fold_stage("adjust")
    def choose_kv_type(
        self, ctx: HookContext, request: ChatRequest, plan: Plan, proposal: Choice[Any] | None
    ) -> Choice[Any] | None:
        """A lower KV type, only when the model is (re)loaded anyway: never a reload of its own."""
        advisor = self.advisor
        if advisor is None or proposal is None or advisor.knobs.kv_type is None or not self._settings(ctx.host).act:
            return None
        if request.model in ctx.loaded and ctx.loaded[request.model] == plan.num_ctx:
            return None  # loaded and staying loaded: the switch waits for the next load
        if kv_type_bytes(advisor.knobs.kv_type) >= kv_type_bytes(str(proposal.value)):
            return None
        return Choice(advisor.knobs.kv_type, f"session advisor under pressure ({advisor.state})")

    # -- what the server and the CLI read ------------------------------------------------------------

    @property
    def recommended_concurrency(self) -> int | None:
        """The max concurrent requests the advisor recommends (None before it has started)."""
        if self.advisor is None:
            return None
        return self.advisor.knobs.concurrency or self.advisor.base_concurrency

    @hookimpl
    def plugin_status(self) -> dict[str, Any]:
        """For ``/health`` and ``autotune status``."""
        return self.status()

    def status(self) -> dict[str, Any]:
        advisor = self.advisor
        if advisor is None:
            return {"state": "NOT_STARTED"}
        last = advisor.samples[-1] if advisor.samples else None
        return {
            "score": advisor.score,
            "label": label(advisor.score),
            "state": advisor.state,
            "signals": {name: {"level": level, "detail": text} for name, (level, text) in advisor.signals.items()},
            "recommended_concurrency": self.recommended_concurrency,
            "context_ceiling": advisor.knobs.context_ceiling,
            "kv_type_next_load": advisor.knobs.kv_type,
            "advice": list(advisor.knobs.advice),
            "unloaded": list(self.unloaded),
            "recent_actions": [a.as_dict() for a in list(advisor.actions)[-10:]],
            "sample": None
            if last is None
            else {
                "ram_percent": last.ram_percent,
                "swap_percent": last.swap_percent,
                "cpu_percent": last.cpu_percent,
                "thermal": last.thermal,
                "gpu_memory_percent": last.gpu_memory_percent,
            },
        }

    @hookimpl
    def register_commands(self, cli: Any) -> None:
        """``autotune status``, or ``autotune advisor`` when the core already has a ``status``."""
        from .cli import status_command

        command = status_command(self)
        name = "advisor" if "status" in getattr(cli, "commands", {}) else "status"
        cli.add_command(command, name=name)
