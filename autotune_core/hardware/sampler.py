"""Memory pressure: classify RAM and swap into tiers, and watch them from a background task.

:func:`classify_pressure` maps numbers to a :data:`~autotune_core.hardware.PressureTier`,
:func:`read_pressure` takes one psutil sample, and :class:`PressureSampler` samples every 250 ms
in the background, keeps the latest :class:`~autotune_core.hardware.Pressure` and calls back when
the tier changes. Going up a tier is immediate; going down needs the lower tier for 2 s
(:class:`TierHysteresis`), so a tier does not flap while memory hovers around a threshold.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import psutil

from .snapshot import Pressure, PressureTier

log = logging.getLogger(__name__)

MB = 1024**2

#: RAM in use (percent of total, psutil's ``virtual_memory().percent``) from which a tier starts
RAM_MODERATE_PERCENT = 80.0
RAM_HIGH_PERCENT = 88.0
RAM_CRITICAL_PERCENT = 93.0
#: swap in use from which the machine is critical whatever the RAM says
SWAP_CRITICAL_PERCENT = 20.0
#: active swapping (swap-used growth) raises the tier to at least moderate / high
SWAP_GROWTH_MODERATE_BYTES_PER_S = 10 * MB / 60  # 10 MB per minute
SWAP_GROWTH_HIGH_BYTES_PER_S = 50 * MB / 60  # 50 MB per minute
#: time constant (s) of the exponential smoothing of swap growth: one 128 KiB burst of kswapd is
#: not "active swapping", a steady stream is
SWAP_GROWTH_SMOOTHING_S = 1.0

#: the sampler's default period
DEFAULT_INTERVAL_S = 0.25
#: how long a lower tier must hold before the sampler steps down to it
DOWNGRADE_AFTER_S = 2.0

#: tiers from lowest to highest
TIERS: tuple[PressureTier, ...] = ("normal", "moderate", "high", "critical")
_RANK: dict[str, int] = {tier: rank for rank, tier in enumerate(TIERS)}


def tier_rank(tier: PressureTier) -> int:
    """0 for "normal" up to 3 for "critical"."""
    return _RANK[tier]


def classify_pressure(ram_percent: float, swap_percent: float, swap_growth_bytes_per_s: float) -> PressureTier:
    """The tier for these numbers.

    RAM use ≥ 80 / 88 / 93 % is moderate / high / critical. Swap growing by ≥ 10 MB/min raises the
    tier to at least moderate, ≥ 50 MB/min to at least high. Swap ≥ 20 % used is critical.
    """
    rank = 0
    if ram_percent >= RAM_CRITICAL_PERCENT:
        rank = 3
    elif ram_percent >= RAM_HIGH_PERCENT:
        rank = 2
    elif ram_percent >= RAM_MODERATE_PERCENT:
        rank = 1
    if swap_growth_bytes_per_s >= SWAP_GROWTH_HIGH_BYTES_PER_S:
        rank = max(rank, 2)
    elif swap_growth_bytes_per_s >= SWAP_GROWTH_MODERATE_BYTES_PER_S:
        rank = max(rank, 1)
    if swap_percent >= SWAP_CRITICAL_PERCENT:
        rank = 3
    return TIERS[rank]


def read_pressure(
    previous: Pressure | None = None,
    *,
    vm: Callable[[], Any] = psutil.virtual_memory,
    swap: Callable[[], Any] = psutil.swap_memory,
    clock: Callable[[], float] = time.time,
    smoothing_s: float = SWAP_GROWTH_SMOOTHING_S,
) -> Pressure:
    """One sample of memory pressure; swap growth comes from ``previous`` (None: growth 0).

    Growth is the swap-used delta over the time since ``previous``, smoothed exponentially with
    time constant ``smoothing_s`` (0: the raw delta). ``timestamp`` is ``clock()`` (wall time).
    """
    now = clock()
    mem = vm()
    try:
        sw = swap()
        swap_total, swap_used, swap_percent = int(sw.total), int(sw.used), float(sw.percent)
    except Exception as exc:  # psutil raises on some containers without swap accounting
        log.debug("cannot read swap: %s", exc)
        swap_total = swap_used = 0
        swap_percent = 0.0
    if not swap_total:
        swap_percent = 0.0
    growth = 0.0
    if previous is not None and previous.timestamp > 0:
        elapsed = now - previous.timestamp
        if elapsed > 0:
            instant = (swap_used - previous.swap_used_bytes) / elapsed
            if smoothing_s > 0:
                alpha = 1.0 - math.exp(-elapsed / smoothing_s)
                growth = previous.swap_growth_bytes_per_s + alpha * (instant - previous.swap_growth_bytes_per_s)
            else:
                growth = instant
        else:
            growth = previous.swap_growth_bytes_per_s
    ram_percent = float(mem.percent)
    return Pressure(
        tier=classify_pressure(ram_percent, swap_percent, growth),
        ram_percent=ram_percent,
        swap_percent=swap_percent,
        available_bytes=int(mem.available),
        swap_used_bytes=swap_used,
        swap_growth_bytes_per_s=growth,
        timestamp=now,
    )


class TierHysteresis:
    """Tier with hysteresis: up at once, down only after ``downgrade_after_s`` below the current tier.

    Each step down is timed separately: after critical, one "high" sample then "normal" samples
    goes to high 2 s after the high sample's run began, and to normal 2 s after normal began.
    """

    def __init__(self, downgrade_after_s: float = DOWNGRADE_AFTER_S, initial: PressureTier = "normal") -> None:
        self.downgrade_after_s = downgrade_after_s
        self.tier: PressureTier = initial
        #: per rank k (1..3): when the current run of samples below k began
        self._below_since: list[float | None] = [None] * len(TIERS)

    def update(self, raw: PressureTier, now: float) -> PressureTier:
        """Feeds one raw sample taken at ``now`` (monotonic seconds); returns the confirmed tier."""
        raw_rank = tier_rank(raw)
        for k in range(1, len(TIERS)):
            if raw_rank < k:
                if self._below_since[k] is None:
                    self._below_since[k] = now
            else:
                self._below_since[k] = None
        rank = tier_rank(self.tier)
        if raw_rank > rank:
            rank = raw_rank
        else:
            while rank > raw_rank:
                since = self._below_since[rank]
                if since is None or now - since < self.downgrade_after_s:
                    break
                rank -= 1
        self.tier = TIERS[rank]
        return self.tier


#: a pressure callback: sync, or returning an awaitable (an ``async def``)
OnChange = Callable[[Pressure], object]
#: reads one sample given the previous one (see :func:`read_pressure`)
PressureReader = Callable[[Pressure | None], Pressure]


class PressureSampler:
    """Samples memory pressure in the background and reports tier changes.

    ``start()`` (inside a running event loop) takes one sample at once, then one every
    ``interval`` seconds. ``current`` is the latest sample with the hysteresis-confirmed tier (``raw``
    has the tier of the numbers alone). ``on_change`` runs in its own task, one call at a time,
    only when the confirmed tier differs from the last one reported (the initial tier counts as
    "normal"); changes that come and go while a slow callback runs are coalesced. Exceptions of
    the reader or the callback are logged and never stop the sampler. ``stop()`` cancels both
    tasks (including a callback in flight); start/stop may be repeated.
    """

    def __init__(
        self,
        on_change: OnChange | None = None,
        *,
        interval: float = DEFAULT_INTERVAL_S,
        reader: PressureReader | None = None,
        downgrade_after_s: float = DOWNGRADE_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.on_change = on_change
        self.interval = interval
        self._reader: PressureReader = reader if reader is not None else read_pressure
        self._clock = clock
        self._hysteresis = TierHysteresis(downgrade_after_s)
        self._current: Pressure | None = None
        self._raw: Pressure | None = None
        self._reported: PressureTier = "normal"
        self._task: asyncio.Task[None] | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._changed: asyncio.Event | None = None
        self._failing = False
        self.samples = 0

    # -- state -------------------------------------------------------------------------------------

    @property
    def current(self) -> Pressure | None:
        """The latest sample, its tier confirmed by hysteresis; None before the first sample."""
        return self._current

    @property
    def raw(self) -> Pressure | None:
        """The latest sample as read, its tier from the numbers alone."""
        return self._raw

    @property
    def tier(self) -> PressureTier:
        return self._hysteresis.tier

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Starts sampling on the running loop (no-op when already running). Needs a running loop."""
        loop = asyncio.get_running_loop()
        if self._task is not None and not self._task.done() and self._task.get_loop() is loop:
            return
        self._cancel_tasks()  # leftovers, e.g. of another (closed) loop
        if self.on_change is not None:
            self._changed = asyncio.Event()
            self._dispatcher = loop.create_task(self._dispatch(), name="autotune-pressure-callbacks")
        self._sample_once()
        self._task = loop.create_task(self._run(), name="autotune-pressure-sampler")

    async def stop(self) -> None:
        """Stops sampling and waits for the tasks to end. Safe when not started or already stopped."""
        loop = asyncio.get_running_loop()
        mine = [t for t in self._cancel_tasks() if t.get_loop() is loop]
        if mine:
            await asyncio.gather(*mine, return_exceptions=True)

    def _cancel_tasks(self) -> list[asyncio.Task[None]]:
        tasks = [t for t in (self._task, self._dispatcher) if t is not None]
        self._task = self._dispatcher = None
        self._changed = None
        for task in tasks:
            if not task.done():
                with contextlib.suppress(RuntimeError):  # its loop is closed
                    task.cancel()
        return tasks

    async def __aenter__(self) -> PressureSampler:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- internals ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self._sample_once()

    def _sample_once(self) -> None:
        try:
            raw = self._reader(self._raw)
        except Exception as exc:
            if not self._failing:
                log.warning("pressure sampling failed (repeats logged at debug level): %s", exc, exc_info=True)
                self._failing = True
            else:
                log.debug("pressure sampling failed: %s", exc)
            return
        if self._failing:
            log.info("pressure sampling recovered")
            self._failing = False
        self.samples += 1
        self._raw = raw
        tier = self._hysteresis.update(raw.tier, self._clock())
        self._current = raw if raw.tier == tier else raw.model_copy(update={"tier": tier})
        if tier != self._reported and self._changed is not None:
            self._changed.set()

    async def _dispatch(self) -> None:
        while True:
            changed = self._changed
            if changed is None:
                return
            await changed.wait()
            changed.clear()
            pressure = self._current
            if pressure is None or pressure.tier == self._reported or self.on_change is None:
                continue
            self._reported = pressure.tier
            try:
                result = self.on_change(pressure)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("pressure callback failed for tier %s", pressure.tier)
