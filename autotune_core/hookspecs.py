"""The hook contract. Every hook is called with keyword arguments; implement any subset of them.

Calling rules (enforced by :class:`autotune_core.host.PluginHost`, documented in docs/hooks.md):

- *collect-all*: every implementation runs in plugin order; results (if any) are collected.
- *fold*: each implementation receives the previous ``proposal`` and returns a new
  :class:`~autotune_core.context.Choice` or ``None`` (keep it). Stages order the fold:
  ``propose`` → ``snap`` → ``adjust`` → ``guard``; guards run last so nothing undoes them.
- Hooks marked *may await* may return an awaitable; the host awaits it before the next plugin.
- ``choose_*`` hooks must be pure and fast: no network or disk I/O.
- A raising implementation is skipped for that call, logged and counted; a raising guard keeps
  the more conservative value seen so far.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .markers import hookspec

if TYPE_CHECKING:
    from collections.abc import Callable

    import click

    from .context import Choice, HookContext
    from .hardware import Pressure
    from .host import PluginHost
    from .messages import ChatRequest, ChatResult
    from .plan import Plan


@hookspec
def register_backends(register: Callable[..., None]) -> None:
    """Collect-all, at host start. Call ``register(BackendClass)`` for each backend you provide."""


@hookspec
def register_archetypes(register: Callable[..., None]) -> None:
    """Collect-all, at host start. Call ``register(profile_set)`` with hardware-archetype profiles."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Collect-all, when the CLI starts. Add click commands or groups to ``cli``."""


@hookspec
def register_routes(register: Callable[..., None]) -> None:
    """Collect-all, when the server app is built. Call ``register(path, endpoint, methods=[...])``."""


@hookspec
def pre_request(ctx: HookContext, request: ChatRequest, plan: Plan) -> Any:
    """Collect-all in plugin order, may await. Edit ``plan`` (messages, num_keep, keep_alive, num_batch,
    flash_attn, max_tokens, sampling) or refuse with ``raise RequestRejected(...)``. Return nothing."""


@hookspec
def choose_num_ctx(
    ctx: HookContext, request: ChatRequest, plan: Plan, proposal: Choice[Any] | None
) -> Choice[Any] | None:
    """Fold over stages propose → snap → adjust → guard. Return a new ``Choice(value, reason)`` for
    num_ctx, or None to keep ``proposal``. Pure: no I/O."""


@hookspec
def choose_kv_type(
    ctx: HookContext, request: ChatRequest, plan: Plan, proposal: Choice[Any] | None
) -> Choice[Any] | None:
    """Fold, as ``choose_num_ctx``, for the KV cache type ("f16", "q8_0", "q4_0", ...). Runs after
    num_ctx is final, so guards can size the cache. Pure: no I/O."""


@hookspec
def post_response(ctx: HookContext, request: ChatRequest, plan: Plan, result: ChatResult) -> Any:
    """Collect-all after the answer is complete (or the stream ended), may await: telemetry, recall
    save, truncation check, advisor baselines. ``result`` carries usage and timings."""


@hookspec
def on_pressure(ctx: HookContext, pressure: Pressure) -> Any:
    """Collect-all, may await, when the sampler's pressure tier changes: shrink, unload, advise."""


@hookspec
def on_startup(host: PluginHost) -> Any:
    """Collect-all, may await, once when a host starts serving: open stores, start samplers."""


@hookspec
def on_shutdown(host: PluginHost) -> Any:
    """Collect-all, may await, once when a host stops: close stores, stop samplers, restore state."""
