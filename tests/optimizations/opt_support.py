"""Shared helpers for the optimization-plugin tests: hosts holding only our plugins and the fake backend."""

from __future__ import annotations

import asyncio
from typing import Any

from autotune_core.backend import Capabilities, KnobScope, KnobSupport
from autotune_core.config import PluginsConfig, Settings
from autotune_core.context import HookContext
from autotune_core.hardware import HardwareSnapshot, Pressure
from autotune_core.host import PluginHost
from autotune_core.messages import ChatRequest, ChatResult, Message, Usage
from autotune_core.modelinfo import ModelInfo
from autotune_core.pipeline import Pipeline, Prepared
from autotune_core.plan import Plan
from autotune_core.profiles import get_profile
from autotune_core.pytest_plugin import make_host as shipped_host
from autotune_core.testing import FakeBackend
from autotune_plugins.ctx_buckets import CtxBucketsPlugin
from autotune_plugins.ctx_sizing import CtxSizingPlugin
from autotune_plugins.flash_attention import FlashAttentionPlugin
from autotune_plugins.keep_alive import KeepAlivePlugin
from autotune_plugins.kv_precision import KVPrecisionPlugin
from autotune_plugins.live_pressure import LivePressurePlugin
from autotune_plugins.model_fit import ModelFitPlugin
from autotune_plugins.noswap_guard import NoSwapGuardPlugin
from autotune_plugins.prefill_batch import PrefillBatchPlugin
from autotune_plugins.prefix_protect import PrefixProtectPlugin

#: plugin name -> class, for the ten optimizations
OPTIMIZATIONS: dict[str, type] = {
    "ctx-sizing": CtxSizingPlugin,
    "ctx-buckets": CtxBucketsPlugin,
    "kv-precision": KVPrecisionPlugin,
    "live-pressure": LivePressurePlugin,
    "noswap-guard": NoSwapGuardPlugin,
    "model-fit": ModelFitPlugin,
    "prefix-protect": PrefixProtectPlugin,
    "keep-alive": KeepAlivePlugin,
    "flash-attention": FlashAttentionPlugin,
    "prefill-batch": PrefillBatchPlugin,
}


def make_host(
    *names: str,
    settings: dict[str, dict[str, Any]] | None = None,
    profile: str = "balanced",
    hardware: HardwareSnapshot | None = None,
    disabled: list[str] | None = None,
    env: dict[str, str] | None = None,
    plugins: list[object] | None = None,
) -> PluginHost:
    """The shipped host (pytest_plugin.make_host) holding the named optimization plugins (all ten when none named)."""
    # registered in name order, as entry points are, so pluggy's order matches production
    chosen = plugins if plugins is not None else [OPTIMIZATIONS[n]() for n in sorted(names or OPTIMIZATIONS)]
    config = Settings(backend="fake", profile=profile, plugins=PluginsConfig(disabled=disabled or []))
    return shipped_host(*chosen, config=config, settings=settings, env=env or {}, hardware=hardware)


def fake(host: PluginHost) -> FakeBackend:
    backend = host.backend("fake")
    assert isinstance(backend, FakeBackend)
    return backend


def set_scope(host: PluginHost, knob: str, scope: KnobScope, how: str = "") -> None:
    backend = fake(host)
    knobs = dict(backend.caps.knobs)
    knobs[knob] = KnobSupport(scope=scope, reloads=scope is KnobScope.AT_LOAD, how=how)
    backend.caps = Capabilities(
        dialect=backend.caps.dialect,
        knobs=knobs,
        can_tokenize=backend.caps.can_tokenize,
        can_embed=backend.caps.can_embed,
        prefix_cache=backend.caps.prefix_cache,
    )


def chat(
    text: str = "Hello, how are you?",
    *,
    model: str = "llama3.2:1b",
    system: str | None = None,
    history: list[tuple[str, str]] | None = None,
    **fields: Any,
) -> ChatRequest:
    messages = [Message(role="system", content=system)] if system else []
    for user, assistant in history or []:
        messages += [Message(role="user", content=user), Message(role="assistant", content=assistant)]
    messages.append(Message(role="user", content=text))
    return ChatRequest(model=model, messages=messages, **fields)


def prepare(host: PluginHost, request: ChatRequest, *, info: ModelInfo | None = None) -> Prepared:
    """Plan through the real pipeline (resolve, hooks, folds, _check_fit, reconcile)."""
    pipeline = Pipeline(host)

    async def go() -> Prepared:
        if info is None:
            return await pipeline.prepare(request)
        backend = fake(host)
        backend.models[info.name] = info
        return await pipeline.plan(request.model_copy(update={"model": info.name}), backend, info)

    return asyncio.run(go())


def plan(host: PluginHost, request: ChatRequest, *, info: ModelInfo | None = None) -> Plan:
    return prepare(host, request, info=info).plan


def run(host: PluginHost, request: ChatRequest) -> tuple[Plan, ChatResult]:
    """Plan, send to the fake backend and run post_response (what the server does)."""
    pipeline = Pipeline(host)

    async def go() -> tuple[Plan, ChatResult]:
        prepared = await pipeline.prepare(request)
        result = await pipeline.run(prepared)
        return prepared.plan, result

    return asyncio.run(go())


def context(
    host: PluginHost,
    *,
    model: ModelInfo | None = None,
    pressure: Pressure | None = None,
    loaded: dict[str, int | None] | None = None,
    profile: str = "balanced",
) -> HookContext:
    backend = fake(host)
    return HookContext(
        host=host,
        hardware=host.hardware,
        capabilities=backend.capabilities(),
        backend_name="fake",
        profile=get_profile(profile),
        model=model,
        pressure=pressure or Pressure(),
        loaded=loaded or {},
    )


def result(prompt_tokens: int, cached: int | None = None) -> ChatResult:
    return ChatResult(
        model="m", content="ok", usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=2, cached_tokens=cached)
    )


def pressure(tier: str = "normal", ram: float = 50.0, **kw: Any) -> Pressure:
    return Pressure(tier=tier, ram_percent=ram, **kw)  # type: ignore[arg-type]


def steps(p: Plan, plugin: str, knob: str | None = None) -> list[str]:
    return [e.reason for e in p.trace if e.plugin == plugin and (knob is None or e.knob == knob)]
