"""PluginHost: a fresh pluggy manager per instance, deterministic discovery, folds with a trace,
fault isolation. The CLI, the server and library users are all just users of a host.
"""

from __future__ import annotations

import inspect
import logging
import operator
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import import_module, metadata
from typing import TYPE_CHECKING, Any, TypeVar

import pluggy
from pydantic import BaseModel

from . import hookspecs
from .backend import Backend
from .config import Settings, load_settings, validate_section
from .context import Choice
from .errors import AutotuneError, PluginError
from .hookkinds import STAGES
from .hooks import FOLDS, KINDS, REQUEST_SCOPED, Hooks, Isolated
from .markers import PROJECT

if TYPE_CHECKING:
    from .hardware import HardwareSnapshot, Pressure
    from .plan import Plan

log = logging.getLogger("autotune.host")
S = TypeVar("S", bound=BaseModel)

#: plugins that cannot be disabled
ESSENTIAL: frozenset[str] = frozenset({"core"})
#: plugin tiers: essential (cannot be disabled), default (on unless disabled), opt-in (off unless enabled)
TIERS: tuple[str, ...] = ("essential", "default", "opt-in")


@dataclass
class PluginRecord:
    """What ``autotune plugins list`` shows for one plugin."""

    name: str
    source: str
    module: str
    version: str | None = None
    tier: str = "default"
    status: str = "loaded"  # loaded | disabled | opt-in | error
    reason: str = ""
    hooks: list[str] = field(default_factory=list)
    registered: list[str] = field(default_factory=list)
    failures: int = 0
    last_failure: str = ""
    fold_positions: dict[str, str] = field(default_factory=dict)
    description: str = ""

    @property
    def enabled(self) -> bool:
        return self.status == "loaded"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "source": self.source,
            "module": self.module,
            "enabled": self.enabled,
            "status": self.status,
            "reason": self.reason,
            "tier": self.tier,
            "hooks": self.hooks,
            "fold_positions": self.fold_positions,
            "registered": self.registered,
            "failures": self.failures,
            "last_failure": self.last_failure,
            "description": self.description,
        }


@dataclass(frozen=True, slots=True)
class HookImpl:
    """One implementation as the host calls it (a plugin may have several per hook via ``specname``)."""

    plugin: str
    function: Callable[..., Any]
    argnames: tuple[str, ...]
    stage: str
    tryfirst: bool = False
    trylast: bool = False
    #: the arguments it takes, in order, picked from the call's keyword dict (C speed: a request makes ~30 calls)
    pick: Callable[[dict[str, Any]], tuple[Any, ...]] = field(default=tuple, compare=False, repr=False)

    @staticmethod
    def picker(argnames: tuple[str, ...]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
        if len(argnames) >= 2:
            return operator.itemgetter(*argnames)
        if argnames:
            name = argnames[0]
            return lambda kwargs: (kwargs[name],)
        return lambda kwargs: ()


_Impl = HookImpl


def _names(value: str | None) -> set[str] | None:
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


def _refuse_wrappers(pm: pluggy.PluginManager, plugin: object) -> None:
    """The host calls implementations itself (folds, isolation), so pluggy wrappers cannot work."""
    for caller in pm.get_hookcallers(plugin) or []:
        for impl in caller.get_hookimpls():
            if impl.plugin is plugin and (impl.wrapper or impl.hookwrapper):
                raise pluggy.PluginValidationError(
                    plugin,
                    f"{caller.name}: wrapper/hookwrapper implementations are not supported; "
                    "use tryfirst/trylast and fold stages",
                )


def _describe_plugin(obj: object) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc else ""


class PluginHost:
    """A fresh plugin manager with the autotune hook contract.

    >>> host = PluginHost(plugins=[MyPlugin()], load_entrypoints=False)
    """

    def __init__(
        self,
        config: Settings | None = None,
        plugins: Iterable[object] = (),
        *,
        load_entrypoints: bool = True,
        env: dict[str, str] | None = None,
        hardware: HardwareSnapshot | None = None,
        stack: Iterable[str] | None = None,
    ) -> None:
        self.env = dict(os.environ if env is None else env)
        self.config = config if config is not None else load_settings(env=self.env)
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(hookspecs)
        #: the typed facade: the one way the core calls plugins
        self.hooks = Hooks(self)
        self.records: dict[str, PluginRecord] = {}
        self.backend_classes: dict[str, tuple[type[Backend], str]] = {}
        self.archetype_sets: list[tuple[str, Any]] = []
        self._backends: dict[str, Backend] = {}
        self._settings_cache: dict[str, BaseModel] = {}
        #: settings model -> its validated settings, filled by :meth:`settings_of` (plugins ask ~20 times a request)
        self._settings_by_model: dict[type[BaseModel], BaseModel] = {}
        self._impl_cache: dict[str, list[_Impl]] = {}
        #: (hook, skip) -> the implementations that run: filled on first use, cleared with ``_impl_cache``
        self._run_cache: dict[tuple[str, frozenset[str]], tuple[_Impl, ...]] = {}
        self._hardware = hardware
        self.pressure: Pressure | None = None
        self._concurrency_cap: tuple[int, str, str] | None = None
        self._concurrency_base: Callable[[], int] | None = None
        self._in_flight: Callable[[], int] | None = None
        self.trace_hooks = self.env.get("AUTOTUNE_TRACE_PLUGINS", "") not in ("", "0", "false")
        stack_names = list(stack) if stack is not None else self.config.server.plugins
        self.stack: frozenset[str] | None = frozenset(stack_names) if stack_names is not None else None
        self._allow = _names(self.env.get("AUTOTUNE_LOAD_PLUGINS"))
        self._block = (_names(self.env.get("AUTOTUNE_DISABLE_PLUGINS")) or set()) | set(self.config.plugins.disabled)
        started = time.perf_counter()
        from . import core_plugin

        self._register(core_plugin.CorePlugin(), "core", source="core", module=core_plugin.__name__, strict=True)
        if load_entrypoints:
            self._load_entrypoints()
        for spec in self.config.plugins.load:
            self._load_spec(spec)
        for obj in plugins:
            name = str(getattr(obj, "name", None) or getattr(obj, "__name__", type(obj).__name__))
            self._register(obj, name, source="programmatic", module=type(obj).__module__, strict=True)
        self._collect_registrations()
        self.startup_ms = (time.perf_counter() - started) * 1000

    # -- discovery ------------------------------------------------------------------------------

    def _allowed(self, name: str) -> tuple[bool, str]:
        if name in ESSENTIAL:
            return True, ""
        if self._allow is not None and name not in self._allow:
            return False, "not in AUTOTUNE_LOAD_PLUGINS"
        if name in self._block:
            where = (
                "AUTOTUNE_DISABLE_PLUGINS"
                if name in (_names(self.env.get("AUTOTUNE_DISABLE_PLUGINS")) or set())
                else "config [plugins] disabled"
            )
            return False, f"disabled by {where}"
        return True, ""

    def _load_entrypoints(self) -> None:
        eps = sorted(metadata.entry_points(group=PROJECT), key=lambda ep: ep.name)
        seen: set[str] = set()
        for ep in eps:
            if ep.name in seen:
                continue
            seen.add(ep.name)
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else None
            source = "builtin" if dist_name == PROJECT else "entry point"
            version = dist.version if dist is not None else None
            record = PluginRecord(name=ep.name, source=source, module=ep.value, version=version)
            ok, reason = self._allowed(ep.name)
            if not ok:
                record.status, record.reason = "disabled", reason
                self.records[ep.name] = record
                continue
            try:
                loaded = ep.load()
            except Exception as exc:  # a broken third-party plugin must not take the host down
                log.error("plugin %s failed to import: %s", ep.name, exc)
                record.status, record.reason = "error", f"import failed: {exc}"
                self.records[ep.name] = record
                continue
            self._register(loaded, ep.name, source=source, module=ep.value, version=version, strict=False)

    def _load_spec(self, spec: str) -> None:
        module_name, _, attr = spec.partition(":")
        try:
            obj: Any = import_module(module_name)
            for part in filter(None, attr.split(".")):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise PluginError(f"cannot load plugin {spec!r} named in [plugins] load: {exc}") from exc
        name = str(getattr(obj, "name", None) or spec)
        ok, reason = self._allowed(name)
        if not ok:
            self.records[name] = PluginRecord(name=name, source="config", module=spec, status="disabled", reason=reason)
            return
        self._register(obj, name, source="config", module=spec, strict=True)

    def _register(
        self, obj: object, name: str, *, source: str, module: str, version: str | None = None, strict: bool
    ) -> None:
        try:
            plugin = obj() if inspect.isclass(obj) else obj
        except Exception as exc:
            if strict:
                raise PluginError(f"plugin {name!r} ({module}) failed to start: {exc}") from exc
            log.error("plugin %s failed to start: %s", name, exc)
            self.records[name] = PluginRecord(
                name=name,
                source=source,
                module=module,
                version=version,
                status="error",
                reason=f"failed to start: {exc}",
            )
            return
        tier = str(getattr(plugin, "tier", "essential" if name in ESSENTIAL else "default"))
        if tier not in TIERS or (tier == "essential") != (name in ESSENTIAL):
            # toggles apply before a plugin is imported, so only the core's list can make a plugin essential
            log.warning("plugin %s declares tier %r; treated as 'default'", name, tier)
            tier = "essential" if name in ESSENTIAL else "default"
        record = PluginRecord(
            name=name, source=source, module=module, version=version, tier=tier, description=_describe_plugin(plugin)
        )
        if tier == "opt-in" and name not in self.config.plugins.enabled and not (self._allow and name in self._allow):
            record.status, record.reason = "opt-in", "opt-in: enable with `autotune plugins enable`"
            self.records[name] = record
            return
        if self.pm.has_plugin(name):
            raise PluginError(f"a plugin named {name!r} is already registered")
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
            _refuse_wrappers(self.pm, plugin)
        except pluggy.PluginValidationError as exc:
            if self.pm.has_plugin(name):
                self.pm.unregister(name=name)
            message = f"plugin {name!r} ({module}) is invalid: {exc}"
            if strict:
                raise PluginError(message) from exc
            log.error("%s", message)
            record.status, record.reason = "error", message
            self.records[name] = record
            return
        record.hooks = sorted({caller.name for caller in self.pm.get_hookcallers(plugin) or []})
        self.records[name] = record
        self._impl_cache.clear()
        self._run_cache.clear()
        self.plugin_settings(name)  # invalid settings are the user's to fix: fail loudly, naming the key

    def _collect_registrations(self) -> None:
        self.hooks.register_backends(
            register=lambda plugin: lambda item: self._add_registration(plugin, "backend", item)
        )
        self.hooks.register_archetypes(
            register=lambda plugin: lambda item: self._add_registration(plugin, "archetypes", item)
        )
        for record in self.records.values():
            positions: dict[str, list[str]] = {}
            for hook in sorted(FOLDS):
                for index, impl in enumerate(self._impls(hook), start=1):
                    if impl.plugin == record.name:
                        positions.setdefault(hook, []).append(f"{impl.stage} #{index}")
            record.fold_positions = {hook: ", ".join(found) for hook, found in positions.items()}

    def _add_registration(self, plugin: str, kind: str, item: Any) -> None:
        if kind == "backend":
            if not (inspect.isclass(item) and issubclass(item, Backend)):
                raise PluginError(f"plugin {plugin!r} registered {item!r}, which is not a Backend subclass")
            self.backend_classes[item.name] = (item, plugin)
            self.records[plugin].registered.append(f"backend:{item.name}")
        else:
            self.archetype_sets.append((plugin, item))
            label = getattr(item, "name", None) or type(item).__name__
            self.records[plugin].registered.append(f"archetypes:{label}")

    # -- hook dispatch ----------------------------------------------------------------------------

    def _impls(self, hook: str) -> list[_Impl]:
        cached = self._impl_cache.get(hook)
        if cached is not None:
            return cached
        caller = getattr(self.pm.hook, hook)
        ordered = [
            _Impl(
                plugin=impl.plugin_name,
                function=impl.function,
                argnames=tuple(impl.argnames),
                stage=getattr(impl.function, "autotune_stage", "adjust"),
                tryfirst=impl.tryfirst,
                trylast=impl.trylast,
                pick=_Impl.picker(tuple(impl.argnames)),
            )
            for impl in reversed(caller.get_hookimpls())
        ]
        if hook in FOLDS:
            ordered.sort(key=lambda impl: STAGES.index(impl.stage))
        self._impl_cache[hook] = ordered
        return ordered

    def hook_order(self, hook: str) -> list[str]:
        """Plugin names in the order they run for ``hook`` (what ``plugins list`` shows)."""
        return [impl.plugin for impl in self._impls(hook)]

    def hook_impls(self, hook: str) -> list[HookImpl]:
        """The implementations of ``hook`` in call order, with stage and tryfirst/trylast (cached: do not
        mutate)."""
        return self._impls(hook)

    def skipped_for(self, hook: str, skip: frozenset[str], *, request: bool) -> frozenset[str]:
        """The plugins not to call: ``skip``, plus, for a request hook, those outside the server's stack."""
        if request and self.stack is not None:
            return skip | frozenset(name for name in self.records if name not in self.stack and name not in ESSENTIAL)
        return skip

    def runnable(self, hook: str, skip: frozenset[str]) -> tuple[HookImpl, ...]:
        """The implementations of ``hook`` that run, in call order, leaving out ``skip`` and, for a request
        hook, the plugins outside the server's stack (cached per ``skip``: the request path asks every time)."""
        key = (hook, skip)
        cached = self._run_cache.get(key)
        if cached is None:
            skipped = self.skipped_for(hook, skip, request=hook in REQUEST_SCOPED)
            cached = tuple(impl for impl in self._impls(hook) if impl.plugin not in skipped)
            if len(self._run_cache) > 1024:  # per-model overrides give a bounded set of skips; stay bounded anyway
                self._run_cache.clear()
            self._run_cache[key] = cached
        return cached

    def invoke(self, impl: HookImpl, hook: str, kwargs: dict[str, Any]) -> Any:
        """Call one implementation with the arguments it asks for. A failure other than a deliberate
        refusal (:class:`AutotuneError`) is counted and raised as :class:`~autotune_core.hooks.Isolated`."""
        started = time.perf_counter() if self.trace_hooks else 0.0
        try:
            # pluggy checked at registration that every name is one of the spec's, and the facade passes them all
            result = impl.function(*impl.pick(kwargs))
        except AutotuneError:
            raise
        except Exception as exc:
            self.record_failure(impl.plugin, hook, exc)
            raise Isolated from exc
        if self.trace_hooks:
            took = (time.perf_counter() - started) * 1000
            print(f"autotune: {hook} -> {impl.plugin} ({took:.3f} ms) = {result!r}"[:300], file=sys.stderr)
        return result

    def record_failure(self, plugin: str, hook: str, exc: BaseException) -> None:
        """Count and log a plugin failure; the request goes on without it."""
        record = self.records.get(plugin)
        if record is not None:
            record.failures += 1
            record.last_failure = f"{hook}: {type(exc).__name__}: {exc}"[:300]
        log.warning("plugin %s failed in %s: %s: %s", plugin, hook, type(exc).__name__, exc)

    # -- by-name access, for tools and tests (the core itself calls ``self.hooks``) ------------------------

    def call(self, hook: str, skip: frozenset[str] = frozenset(), **kwargs: Any) -> list[Any]:
        """Run a hook that does not await, by name; the results that are not None."""
        _known(hook)
        return self.hooks._call(hook, kwargs, skip)

    async def acall(self, hook: str, skip: frozenset[str] = frozenset(), **kwargs: Any) -> list[Any]:
        """Run a hook by name, awaiting awaitable results before the next plugin."""
        _known(hook)
        return await self.hooks._acall(hook, kwargs, skip)

    def fold(
        self,
        hook: str,
        *,
        plan: Plan,
        initial: Choice[Any] | None = None,
        skip: frozenset[str] = frozenset(),
        knob: str | None = None,
        conservative: Callable[[Any, Any], Any] | None = None,
        **kwargs: Any,
    ) -> Choice[Any] | None:
        """Run a fold by name (its knob and safest-value rule come from the spec; ``knob``/``conservative``
        are accepted for older callers and must match it)."""
        kind = _known(hook)
        if kind.kind != "fold" or (knob is not None and knob != kind.knob):
            raise PluginError(f"{hook} is not the fold for {knob or 'a knob'}")
        return self.hooks._fold(hook, plan, kwargs, skip, initial)

    # -- the concurrency cap (a typed host API instead of a writable attribute) ----------------------------

    def cap_concurrency(self, plugin: str, value: int | None, reason: str = "") -> None:
        """A plugin may lower the server's max concurrent requests (never raise it); None lifts its cap."""
        if value is None:
            self._concurrency_cap = None
            return
        if value < 1:
            raise PluginError(f"plugin {plugin!r} capped concurrency at {value}; the cap must be at least 1")
        self._concurrency_cap = (int(value), plugin, reason)

    @property
    def concurrency_cap(self) -> int | None:
        """The current cap (the queue reads it), or None for the config's ``max_concurrent``."""
        return self._concurrency_cap[0] if self._concurrency_cap is not None else None

    def serve_concurrency(self, base: Callable[[], int] | None, in_flight: Callable[[], int] | None = None) -> None:
        """The server says how many requests it lets through before any cap (its queue's limit), and how many
        it is running now (its slots in use)."""
        self._concurrency_base = base
        self._in_flight = in_flight

    @property
    def requests_in_flight(self) -> int | None:
        """Requests the server is running right now, or None outside a server. Speed compared with a
        baseline means little across concurrency: a batching model server shares its steps between them."""
        return self._in_flight() if self._in_flight is not None else None

    @property
    def concurrency_base(self) -> int:
        """Requests the server lets through before any cap: ``max_concurrent``, or the backend's slots plus a
        lookahead when the server follows them (live; the config's value outside a server). A plugin that
        lowers the cap scales from this."""
        return self._concurrency_base() if self._concurrency_base is not None else self.config.server.max_concurrent

    @property
    def concurrency_cap_reason(self) -> str:
        """Who set the cap and why (``/health``)."""
        if self._concurrency_cap is None:
            return ""
        value, plugin, reason = self._concurrency_cap
        return f"{plugin}: {value}" + (f" ({reason})" if reason else "")

    # -- services for plugins and users -------------------------------------------------------------

    def plugin(self, name: str) -> Any:
        return self.pm.get_plugin(name)

    def plugin_settings(self, name: str) -> BaseModel:
        """A plugin's validated settings (its ``Settings`` model over ``[plugins.<name>]``)."""
        cached = self._settings_cache.get(name)
        if cached is not None:
            return cached
        plugin = self.pm.get_plugin(name)
        model: type[BaseModel] = getattr(plugin, "Settings", None) or _NoSettings
        settings = validate_section(
            model,
            self.config.plugins.settings.get(name, {}),
            section=f"plugins.{name}",
            label=f"plugin {name!r}",
            source=self.config.source,
        )
        self._settings_cache[name] = settings
        return settings

    def settings_of(self, model: type[S]) -> S:
        """The validated settings whose model is ``model`` (``ctx.settings(CtxSizingSettings)``), typed.
        Called in hooks on every request, so each model's settings are remembered ."""
        found = self._settings_by_model.get(model)
        if found is not None:
            return found  # type: ignore[return-value]
        owner = next(
            (
                name
                for name, record in self.records.items()
                if record.enabled and getattr(self.pm.get_plugin(name), "Settings", None) is model
            ),
            None,
        )
        if owner is None:
            raise PluginError(f"no enabled plugin declares Settings = {model.__name__}")
        settings = self.plugin_settings(owner)
        assert isinstance(settings, model)
        self._settings_by_model[model] = settings
        return settings

    def enabled(self, name: str) -> bool:
        record = self.records.get(name)
        return record is not None and record.enabled and (self.stack is None or name in self.stack or name in ESSENTIAL)

    def backend(self, name: str) -> Backend:
        """The backend instance of this host (created on first use with ``[backends.<name>]``)."""
        instance = self._backends.get(name)
        if instance is None:
            if name not in self.backend_classes:
                known = ", ".join(sorted(self.backend_classes)) or "none"
                raise PluginError(f"no backend named {name!r}; registered: {known}")
            cls, _plugin = self.backend_classes[name]
            instance = cls(self.config.backend_settings(name))
            self._backends[name] = instance
        return instance

    @property
    def hardware(self) -> HardwareSnapshot:
        if self._hardware is None:
            from .hardware.detect import detect_hardware

            self._hardware = detect_hardware()
        return self._hardware

    @hardware.setter
    def hardware(self, snapshot: HardwareSnapshot) -> None:
        self._hardware = snapshot

    def plugins_info(self) -> list[dict[str, Any]]:
        return [self.records[name].as_dict() for name in self.records]

    async def start(self) -> None:
        await self.hooks.on_startup(host=self)

    async def stop(self) -> None:
        await self.hooks.on_shutdown(host=self)
        for instance in list(self._backends.values()):
            try:
                await instance.aclose()
            except Exception as exc:
                log.warning("backend %s failed to close: %s", instance.name, exc)
        self._backends.clear()


def _known(hook: str) -> Any:
    kind = KINDS.get(hook)
    if kind is None:
        raise PluginError(f"no hook named {hook!r}; hooks: {', '.join(sorted(KINDS))}")
    return kind


class _NoSettings(BaseModel):
    """Plugins without settings accept none."""

    model_config = {"extra": "forbid"}
