"""The typed facade: the one way the core calls plugins (``host.hooks.pre_request(ctx=..., ...)``).

One method per hook of ``hookspecs.py``, with the spec's argument names and types; each follows the calling
rule its spec declares (:mod:`autotune_core.hookkinds`). ``tests/core/test_hook_facade.py`` checks the two
against each other, so a new hook cannot be added to one and forgotten in the other. Every caller walks the
same cached list of the implementations that run (:meth:`PluginHost.runnable`) and calls each through
:meth:`PluginHost.invoke` (arguments, failure isolation).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from functools import reduce
from typing import TYPE_CHECKING, Any

from . import hookspecs
from .context import Choice
from .errors import AutotuneError
from .hookkinds import HookKind, kinds

if TYPE_CHECKING:
    import click

    from .backend import Backend
    from .context import HookContext
    from .hardware import Pressure
    from .host import HookImpl, PluginHost
    from .messages import ChatRequest, ChatResult
    from .plan import Plan

#: every hook's calling rule, read from the spec marks
KINDS: dict[str, HookKind] = kinds(hookspecs)
FOLDS: frozenset[str] = frozenset(name for name, kind in KINDS.items() if kind.kind == "fold")
REQUEST_SCOPED: frozenset[str] = frozenset(name for name, kind in KINDS.items() if kind.request)

_NONE: frozenset[str] = frozenset()


class Isolated(Exception):
    """A plugin failed and was skipped (already logged and counted)."""


class Hooks:
    """Calls plugins for one host. Request hooks take ``skip``: plugins a per-model override leaves out."""

    __slots__ = ("_host",)

    def __init__(self, host: PluginHost) -> None:
        self._host = host

    # -- registration and lifecycle ---------------------------------------------------------------------

    def register_backends(self, *, register: Callable[[str], Callable[[type[Backend]], None]]) -> None:
        """``register(plugin_name)`` gives the callback handed to that plugin, so registrations are attributed."""
        self._per_plugin("register_backends", register)

    def register_archetypes(self, *, register: Callable[[str], Callable[[Any], None]]) -> None:
        self._per_plugin("register_archetypes", register)

    def register_commands(self, *, cli: click.Group) -> None:
        self._call("register_commands", {"cli": cli})

    def register_routes(self, *, register: Callable[..., None]) -> None:
        self._call("register_routes", {"register": register})

    async def on_startup(self, *, host: PluginHost) -> None:
        await self._acall("on_startup", {"host": host})

    async def on_shutdown(self, *, host: PluginHost) -> None:
        await self._acall("on_shutdown", {"host": host})

    def plugin_status(self) -> dict[str, Any]:
        """Each enabled plugin's status report by plugin name (None is left out; a failure is an error entry)."""
        host, out = self._host, {}
        for impl in host.hook_impls("plugin_status"):
            if not host.enabled(impl.plugin):
                continue
            try:
                result = host.invoke(impl, "plugin_status", {})
            except Isolated:
                out[impl.plugin] = {"error": host.records[impl.plugin].last_failure}
                continue
            if result is not None and not self._stray_awaitable(impl, "plugin_status", result):
                out[impl.plugin] = result
        return out

    # -- the request path -------------------------------------------------------------------------------

    async def pre_request(
        self, *, ctx: HookContext, request: ChatRequest, plan: Plan, skip: frozenset[str] = _NONE
    ) -> None:
        await self._acall("pre_request", {"ctx": ctx, "request": request, "plan": plan}, skip)

    def choose_num_ctx(
        self, *, ctx: HookContext, request: ChatRequest, plan: Plan, skip: frozenset[str] = _NONE
    ) -> Choice[Any] | None:
        return self._fold("choose_num_ctx", plan, {"ctx": ctx, "request": request}, skip)

    def choose_kv_type(
        self, *, ctx: HookContext, request: ChatRequest, plan: Plan, skip: frozenset[str] = _NONE
    ) -> Choice[Any] | None:
        return self._fold("choose_kv_type", plan, {"ctx": ctx, "request": request}, skip)

    async def post_response(
        self, *, ctx: HookContext, request: ChatRequest, plan: Plan, result: ChatResult, skip: frozenset[str] = _NONE
    ) -> None:
        await self._acall("post_response", {"ctx": ctx, "request": request, "plan": plan, "result": result}, skip)

    async def on_pressure(self, *, ctx: HookContext, pressure: Pressure) -> None:
        await self._acall("on_pressure", {"ctx": ctx, "pressure": pressure})

    # -- dispatch: one loop -----------------------------------------------------------------------------

    def _each(self, hook: str, kwargs: dict[str, Any], skip: frozenset[str]) -> Iterator[tuple[HookImpl, Any]]:
        """Each implementation's raw result, in call order; failing ones are counted and skipped."""
        host = self._host
        for impl in host.runnable(hook, skip):
            try:
                yield impl, host.invoke(impl, hook, kwargs)
            except Isolated:
                continue

    def _stray_awaitable(self, impl: HookImpl, hook: str, result: Any) -> bool:
        """A coroutine returned to a hook that is never awaited: closed, counted, ignored."""
        if not inspect.isawaitable(result):
            return False
        close = getattr(result, "close", None)
        if close is not None:
            close()
        self._host.record_failure(impl.plugin, hook, TypeError("returned an awaitable to a hook that does not await"))
        return True

    def _call(self, hook: str, kwargs: dict[str, Any], skip: frozenset[str] = _NONE) -> list[Any]:
        return [
            result
            for impl, result in self._each(hook, kwargs, skip)
            if result is not None and not self._stray_awaitable(impl, hook, result)
        ]

    def _per_plugin(self, hook: str, factory: Callable[[str], Callable[..., None]]) -> None:
        """A registration hook: each plugin gets its own callback."""
        host = self._host
        for impl in host.hook_impls(hook):
            try:
                result = host.invoke(impl, hook, {"register": factory(impl.plugin)})
            except Isolated:
                continue  # what it registered before failing stays
            except Exception as exc:  # a bad registration (PluginError) is that plugin's failure
                host.record_failure(impl.plugin, hook, exc)
                continue
            self._stray_awaitable(impl, hook, result)

    async def _acall(self, hook: str, kwargs: dict[str, Any], skip: frozenset[str] = _NONE) -> list[Any]:
        results = []
        for impl, result in self._each(hook, kwargs, skip):
            if result is not None and inspect.isawaitable(result):  # most hooks are sync and return None
                try:
                    result = await result
                except AutotuneError:
                    raise
                except Exception as exc:
                    self._host.record_failure(impl.plugin, hook, exc)
                    continue
            if result is not None:
                results.append(result)
        return results

    def _fold(
        self, hook: str, plan: Plan, kwargs: dict[str, Any], skip: frozenset[str], initial: Choice[Any] | None = None
    ) -> Choice[Any] | None:
        """Fold ``hook`` over its stages; every change is recorded in ``plan.trace``.

        A pinned knob (``plan.pins``) starts the fold at its value and keeps it: every implementation still
        runs, its proposal is traced, and only a safety choice may lower it (:meth:`Plan.admits`). A failing
        guard keeps the most conservative value seen so far in this fold.
        """
        kind = KINDS[hook]
        knob, safest = kind.knob, kind.safest
        assert safest is not None, f"{hook} is not a fold"
        host = self._host
        pin = plan.pins.get(knob)
        proposal = Choice(pin.value, pin.describe()) if pin is not None else initial
        seen: list[Any] = [proposal.value] if proposal is not None else []
        kwargs["plan"] = plan
        for impl in host.runnable(hook, skip):
            try:
                kwargs["proposal"] = proposal
                result = host.invoke(impl, hook, kwargs)
                if result is not None and not isinstance(result, Choice):
                    host.record_failure(
                        impl.plugin, hook, TypeError(f"{hook} must return Choice or None, got {type(result).__name__}")
                    )
                    raise Isolated
            except Isolated:
                if impl.stage == "guard" and seen:
                    fallback = reduce(safest, seen)
                    if proposal is None or proposal.value != fallback:
                        plan.record(
                            impl.plugin,
                            knob,
                            proposal.value if proposal else None,
                            fallback,
                            "guard failed; kept the most conservative value",
                        )
                        proposal = Choice(fallback, "guard failed")
                continue
            if result is None:
                continue
            old = proposal.value if proposal is not None else None
            if result.value == old:
                proposal = result
                continue
            if pin is not None and not plan.admits(
                impl.plugin, knob, old, result.value, result.reason, safety=result.safety
            ):
                continue
            plan.record(impl.plugin, knob, old, result.value, result.reason)
            proposal = result
            seen.append(result.value)
        return proposal
