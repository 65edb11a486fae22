"""The hook contract. Every hook is called with keyword arguments; implement any subset of them.

Each spec carries its calling rule (:mod:`autotune_core.hookkinds`), read by the host and the typed facade
(``host.hooks``, :mod:`autotune_core.hooks`); docs/hooks.md describes them:

- *collect*: every implementation runs in plugin order; results (if any) are collected.
- *fold*: each implementation receives the previous ``proposal`` and returns a new
  :class:`~autotune_core.context.Choice` or ``None`` (keep it). Stages order the fold:
  ``propose`` → ``snap`` → ``adjust`` → ``guard``; guards run last so nothing undoes them.
- *request*: describes one request, so it runs only for the plugins in the server's stack.
- *may await*: an implementation may return an awaitable; the host awaits it before the next plugin.
- ``choose_*`` hooks must be pure and fast: no network or disk I/O.
- A raising implementation is skipped for that call, logged and counted; a raising guard keeps
  the more conservative value seen so far.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .hookkinds import collect, fold
from .markers import hookspec
from .modelinfo import smaller_kv_type

if TYPE_CHECKING:
    import click

    from .archetypes import ProfileSet
    from .backend import Backend
    from .context import Choice, HookContext
    from .hardware import Pressure
    from .host import PluginHost
    from .messages import ChatRequest, ChatResult
    from .plan import Plan


@hookspec
@collect()
def register_backends(register: Callable[[type[Backend]], None]) -> None:
    """At host start. Call ``register(BackendClass)`` for each backend you provide."""


@hookspec
@collect()
def register_archetypes(register: Callable[[ProfileSet | dict[str, Any]], None]) -> None:
    """At host start. Call ``register(profile_set)`` with hardware-archetype profiles."""


@hookspec
@collect()
def register_commands(cli: click.Group) -> None:
    """When the CLI starts. Add click commands or groups to ``cli``."""


@hookspec
@collect()
def register_routes(register: Callable[..., None]) -> None:
    """When the server app is built. Call ``register(path, endpoint, methods=[...])``."""


@hookspec
@collect(request=True, may_await=True)
def pre_request(ctx: HookContext, request: ChatRequest, plan: Plan) -> Any:
    """In plugin order. Edit ``plan`` through ``plan.set`` (messages, num_keep, keep_alive, num_batch,
    flash_attn, max_tokens) or refuse with ``raise RequestRejected(...)``. Return nothing."""


@hookspec
@fold(knob="num_ctx", safest=min)
def choose_num_ctx(
    ctx: HookContext, request: ChatRequest, plan: Plan, proposal: Choice[Any] | None
) -> Choice[Any] | None:
    """Return a new ``Choice(value, reason)`` for num_ctx, or None to keep ``proposal``. Pure: no I/O."""


@hookspec
@fold(knob="kv_type", safest=smaller_kv_type)
def choose_kv_type(
    ctx: HookContext, request: ChatRequest, plan: Plan, proposal: Choice[Any] | None
) -> Choice[Any] | None:
    """As ``choose_num_ctx``, for the KV cache type ("f16", "q8_0", "q4_0", ...). Runs after num_ctx is
    final, so guards can size the cache. Pure: no I/O."""


@hookspec
@collect(request=True, may_await=True)
def post_response(ctx: HookContext, request: ChatRequest, plan: Plan, result: ChatResult) -> Any:
    """After the answer is complete (or the stream ended): telemetry, recall save, truncation check,
    advisor baselines. ``result`` carries usage and timings."""


@hookspec
@collect(request=True, may_await=True)
def on_pressure(ctx: HookContext, pressure: Pressure) -> Any:
    """When the sampler's pressure tier changes: shrink, unload, advise."""


@hookspec
@collect(may_await=True)
def on_startup(host: PluginHost) -> Any:
    """Once when a host starts serving: open stores, start samplers."""


@hookspec
@collect(may_await=True)
def on_shutdown(host: PluginHost) -> Any:
    """Once when a host stops: close stores, stop samplers, restore state."""


@hookspec
@collect()
def plugin_status() -> dict[str, Any] | None:
    """A JSON-able summary of the plugin's live state for ``/health`` and ``autotune status`` (the session
    advisor's health score, what os-tuner applied), or None. Cheap: no I/O."""
