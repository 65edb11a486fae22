"""Everything one running server owns: the host and its pipeline, the queue, metrics, the sampler.

Created by :func:`~autotune_core.server.app.create_app`; started and stopped by the app's lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from ..backend import Backend, Capabilities
from ..config import ServerConfig
from ..context import HookContext
from ..errors import BackendUnavailable, ModelNotFound
from ..hardware import HardwareSnapshot, Pressure
from ..host import PluginHost
from ..pipeline import Pipeline
from ..profiles import get_profile
from ..resolver import LIST_TTL
from .metrics import ServerMetrics
from .queue import FairQueue

log = logging.getLogger("autotune.server")

#: how long a backend's availability is reused by /health
HEALTH_TTL = 2.0
#: how long the backends' slot counts are reused by the queue
SLOTS_TTL = 1.0


@dataclass
class BackendStatus:
    name: str
    ok: bool
    reason: str = ""
    version: str | None = None
    checked: float = 0.0


@dataclass
class ServerState:
    host: PluginHost
    config: ServerConfig
    keepalive_interval: float = 5.0
    use_sampler: bool = True
    pipeline: Pipeline = field(init=False)
    queue: FairQueue = field(init=False)
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    started_at: float = field(default_factory=time.time)
    backends_used: set[str] = field(default_factory=set)
    status: dict[str, BackendStatus] = field(default_factory=dict)
    sampler: Any = None
    _resolved: dict[str, tuple[float, str, str]] = field(default_factory=dict)
    _slots: int | None = None
    _slots_until: float = 0.0

    def __post_init__(self) -> None:
        self.pipeline = Pipeline(self.host)
        self.queue = FairQueue(
            self.config.max_concurrent,
            self.config.max_queued,
            self.config.queue_timeout,
            cap=lambda: self.host.concurrency_cap,
            slots=self.backend_slots,
            fixed="max_concurrent" in self.config.model_fields_set,
        )
        self.host.serve_concurrency(lambda: self.queue.base, lambda: self.queue.active)
        self.metrics.queue_capacity.set(self.config.max_concurrent)

    # -- lifecycle ----------------------------------------------------------------------------------------

    async def startup(self) -> None:
        self._ensure_hardware()
        await self.host.start()
        await self.refresh_backends()
        if self.use_sampler:
            self._start_sampler()

    async def shutdown(self) -> None:
        if self.sampler is not None:
            with contextlib.suppress(Exception):
                await self.sampler.stop()
            self.sampler = None
        await self.host.stop()

    def _ensure_hardware(self) -> None:
        """Plugins read ``host.hardware``; if detection is unavailable, fall back to what psutil sees."""
        try:
            _ = self.host.hardware
        except Exception as exc:
            log.warning("hardware detection unavailable (%s); using basic memory figures", exc)
            psutil = importlib.import_module("psutil")  # untyped; imported lazily to keep start-up fast
            memory, swap = psutil.virtual_memory(), psutil.swap_memory()
            self.host.hardware = HardwareSnapshot(
                ram_total_bytes=memory.total,
                ram_available_bytes=memory.available,
                swap_total_bytes=swap.total,
                swap_used_bytes=swap.used,
            )

    async def refresh_backends(self) -> None:
        """Let each candidate backend learn its server's facts, and note which ones answer."""

        async def one(name: str) -> None:
            try:
                backend = self.host.backend(name)
                await asyncio.wait_for(backend.refresh(), 5.0)
            except Exception as exc:
                log.info("backend %s refresh failed: %s", name, exc)
            await self.check_backend(name, force=True)

        await asyncio.gather(*(one(name) for name in self.pipeline.resolver.candidates()))
        self._slots_until = 0.0  # the servers may have said how many requests they run: ask again

    async def check_backend(self, name: str, *, force: bool = False) -> BackendStatus:
        cached = self.status.get(name)
        now = time.monotonic()
        if cached is not None and not force and now - cached.checked < HEALTH_TTL:
            return cached
        try:
            availability = await asyncio.wait_for(self.host.backend(name).available(), 3.0)
            status = BackendStatus(name, availability.ok, availability.reason, availability.version, now)
        except Exception as exc:
            status = BackendStatus(name, False, f"{type(exc).__name__}: {exc}"[:200], None, now)
        self.status[name] = status
        return status

    async def backend_statuses(self) -> list[BackendStatus]:
        return list(await asyncio.gather(*(self.check_backend(n) for n in self.pipeline.resolver.candidates())))

    def backend_slots(self) -> int | None:
        """The most requests any candidate backend says its server runs at once (None: none says); read on
        every admission, so worked out at most once per ``SLOTS_TTL``.

        One queue serves every backend, so it follows the largest: a smaller server behind it holds the
        extra requests in its own queue, which costs no memory there.
        """
        now = time.monotonic()
        if now < self._slots_until:
            return self._slots
        self._slots, self._slots_until = self._backend_slots(), now + SLOTS_TTL
        return self._slots

    def _backend_slots(self) -> int | None:
        best: int | None = None
        for name in self.pipeline.resolver.candidates():
            try:
                slots = self.host.backend(name).parallel_slots()
            except Exception:  # a backend that cannot even be built has no say
                continue
            if slots is not None and (best is None or slots > best):
                best = slots
        return best

    # -- pressure -----------------------------------------------------------------------------------------

    def _start_sampler(self) -> None:
        try:
            from ..hardware.sampler import PressureSampler

            self.sampler = PressureSampler(interval=0.25, on_change=self.on_pressure)
            self.sampler.start()
            if self.sampler.current is not None:
                self.host.pressure = self.sampler.current
        except Exception as exc:
            self.sampler = None
            log.warning("pressure sampler unavailable: %s", exc)

    def latest_pressure(self) -> None:
        """Refresh ``host.pressure`` from the sampler's latest sample (plugins plan with current numbers)."""
        if self.sampler is not None and self.sampler.current is not None:
            self.host.pressure = self.sampler.current

    async def on_pressure(self, pressure: Pressure) -> None:
        self.host.pressure = pressure
        self.metrics.pressure.replace([({"tier": pressure.tier}, 1.0)])
        ctx = HookContext(
            host=self.host,
            hardware=self.host.hardware,
            capabilities=self._any_capabilities(),
            backend_name=self._any_backend_name(),
            profile=get_profile(self.host.config.profile),
            pressure=pressure,
        )
        try:
            await self.host.hooks.on_pressure(ctx=ctx, pressure=pressure)
        except Exception as exc:
            log.warning("on_pressure failed: %s", exc)

    def _any_backend_name(self) -> str:
        for name, status in self.status.items():
            if status.ok:
                return name
        return ""

    def _any_capabilities(self) -> Capabilities:
        name = self._any_backend_name()
        if name:
            with contextlib.suppress(Exception):
                return self.host.backend(name).capabilities()
        return Capabilities(dialect="none", knobs={})

    # -- models -------------------------------------------------------------------------------------------

    async def resolve(self, model: str) -> tuple[Backend, str]:
        """The backend for ``model`` (cached briefly); 502 ``backend_unavailable``, not 404, when none answers."""
        now = time.monotonic()
        hit = self._resolved.get(model)
        if hit is not None and hit[0] > now:
            return self.host.backend(hit[1]), hit[2]
        try:
            backend, upstream = await self.pipeline.resolver.resolve(model)
        except ModelNotFound as exc:
            if not exc.available:
                down = await self.unavailable()
                if down is not None:
                    raise down from None
            raise
        self.backends_used.add(backend.name)
        if len(self._resolved) > 1024:
            self._resolved.clear()
        self._resolved[model] = (now + LIST_TTL, backend.name, upstream)
        return backend, upstream

    async def unavailable(self) -> BackendUnavailable | None:
        statuses = await self.backend_statuses()
        if any(status.ok for status in statuses):
            return None
        reasons = "; ".join(f"{s.name}: {s.reason or 'not available'}" for s in statuses) or "no backends registered"
        return BackendUnavailable(f"no model server is reachable ({reasons})")

    def pressure_tier(self) -> str:
        return self.host.pressure.tier if self.host.pressure is not None else "unknown"
