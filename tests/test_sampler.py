"""Memory-pressure tiers, the hysteresis, and the background sampler (every test well under 2 s)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from types import SimpleNamespace
from typing import cast

import pytest

from autotune_core.hardware import Pressure, PressureTier
from autotune_core.hardware.sampler import (
    DEFAULT_INTERVAL_S,
    DOWNGRADE_AFTER_S,
    MB,
    RAM_CRITICAL_PERCENT,
    RAM_HIGH_PERCENT,
    RAM_MODERATE_PERCENT,
    SWAP_CRITICAL_PERCENT,
    SWAP_GROWTH_HIGH_BYTES_PER_S,
    SWAP_GROWTH_MODERATE_BYTES_PER_S,
    PressureSampler,
    TierHysteresis,
    classify_pressure,
    read_pressure,
)

pytestmark = pytest.mark.timeout(10)

PER_MIN = MB / 60


# -- classification --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ram", "swap", "growth", "tier"),
    [
        (0.0, 0.0, 0.0, "normal"),
        (79.9, 0.0, 0.0, "normal"),
        (80.0, 0.0, 0.0, "moderate"),
        (87.9, 0.0, 0.0, "moderate"),
        (88.0, 0.0, 0.0, "high"),
        (92.9, 0.0, 0.0, "high"),
        (93.0, 0.0, 0.0, "critical"),
        (100.0, 0.0, 0.0, "critical"),
        # active swapping raises the tier
        (50.0, 5.0, 9.9 * PER_MIN, "normal"),
        (50.0, 5.0, 10 * PER_MIN, "moderate"),
        (50.0, 5.0, 49 * PER_MIN, "moderate"),
        (50.0, 5.0, 50 * PER_MIN, "high"),
        (85.0, 5.0, 50 * PER_MIN, "high"),
        (90.0, 5.0, 10 * PER_MIN, "high"),  # never lowers what RAM says
        (95.0, 5.0, 10 * PER_MIN, "critical"),
        # swap shrinking (pages coming back in) is not pressure
        (50.0, 5.0, -100 * PER_MIN, "normal"),
        # a lot of swap in use is critical whatever the RAM
        (10.0, 19.9, 0.0, "normal"),
        (10.0, 20.0, 0.0, "critical"),
        (85.0, 35.0, 0.0, "critical"),
    ],
)
def test_classify_pressure(ram: float, swap: float, growth: float, tier: PressureTier) -> None:
    assert classify_pressure(ram, swap, growth) == tier


def test_thresholds_are_documented_constants() -> None:
    assert (RAM_MODERATE_PERCENT, RAM_HIGH_PERCENT, RAM_CRITICAL_PERCENT) == (80.0, 88.0, 93.0)
    assert SWAP_CRITICAL_PERCENT == 20.0
    assert SWAP_GROWTH_MODERATE_BYTES_PER_S == 10 * MB / 60
    assert SWAP_GROWTH_HIGH_BYTES_PER_S == 50 * MB / 60
    assert (DEFAULT_INTERVAL_S, DOWNGRADE_AFTER_S) == (0.25, 2.0)


# -- read_pressure ---------------------------------------------------------------------------------


def _vm(percent: float, available: int = 4 * MB) -> SimpleNamespace:
    return SimpleNamespace(total=16 * 1024 * MB, available=available, percent=percent)


def _swap(used: int, total: int = 1024 * MB) -> SimpleNamespace:
    return SimpleNamespace(total=total, used=used, percent=100 * used / total if total else 0.0)


def test_read_pressure_first_sample_and_growth() -> None:
    first = read_pressure(vm=lambda: _vm(50.0, 8 * MB), swap=lambda: _swap(10 * MB), clock=lambda: 100.0)
    assert (first.tier, first.ram_percent, first.available_bytes) == ("normal", 50.0, 8 * MB)
    assert (first.swap_used_bytes, first.swap_growth_bytes_per_s, first.timestamp) == (10 * MB, 0.0, 100.0)
    # 60 MB more swap in 60 s = 60 MB/min: actively swapping, so "high" although RAM is at 50 %
    second = read_pressure(first, vm=lambda: _vm(50.0), swap=lambda: _swap(70 * MB), clock=lambda: 160.0, smoothing_s=0)
    assert second.swap_growth_bytes_per_s == pytest.approx(60 * PER_MIN)
    assert second.tier == "high"
    assert second.swap_percent == pytest.approx(100 * 70 / 1024)


def test_read_pressure_smooths_bursts_but_follows_steady_swapping() -> None:
    # one 128 KiB burst of kswapd in a 250 ms sample is not "active swapping"
    base = read_pressure(vm=lambda: _vm(50.0), swap=lambda: _swap(100 * MB), clock=lambda: 10.0)
    burst = read_pressure(base, vm=lambda: _vm(50.0), swap=lambda: _swap(100 * MB + 128 * 1024), clock=lambda: 10.25)
    assert burst.tier == "normal"
    # a steady 30 MB/min is, once it has lasted a couple of seconds
    pressure, used, now = base, 100 * MB, 10.0
    for _ in range(16):
        used += int(30 * PER_MIN * 0.25)
        now += 0.25
        pressure = read_pressure(
            pressure,
            vm=lambda: _vm(50.0),
            swap=lambda u=used: _swap(u),  # type: ignore[misc]
            clock=lambda n=now: n,
        )  # type: ignore[misc]
    assert pressure.swap_growth_bytes_per_s == pytest.approx(30 * PER_MIN, rel=0.05)
    assert pressure.tier == "moderate"


def test_read_pressure_without_swap() -> None:
    def broken() -> SimpleNamespace:
        raise RuntimeError("no /proc/vmstat")

    p = read_pressure(vm=lambda: _vm(81.0), swap=broken)
    assert (p.tier, p.swap_percent, p.swap_used_bytes) == ("moderate", 0.0, 0)
    q = read_pressure(vm=lambda: _vm(10.0), swap=lambda: _swap(0, total=0))
    assert q.swap_percent == 0.0 and q.tier == "normal"


def test_read_pressure_from_psutil() -> None:
    p = read_pressure()
    assert 0.0 < p.ram_percent <= 100.0
    assert p.available_bytes > 0 and p.timestamp > 0
    again = read_pressure(p)
    assert again.timestamp >= p.timestamp


# -- hysteresis ------------------------------------------------------------------------------------


def test_hysteresis_up_at_once_down_after_two_seconds() -> None:
    h = TierHysteresis()
    assert h.update("normal", 0.0) == "normal"
    assert h.update("critical", 0.25) == "critical"  # immediate
    assert h.update("normal", 0.5) == "critical"  # the run of lower samples starts here
    assert h.update("normal", 2.25) == "critical"  # 1.75 s
    assert h.update("normal", 2.5) == "normal"  # 2 s: straight down to normal


def test_hysteresis_steps_down_through_intermediate_tiers() -> None:
    h = TierHysteresis()
    h.update("critical", 0.0)
    assert h.update("high", 0.25) == "critical"
    assert h.update("normal", 0.5) == "critical"
    assert h.update("normal", 2.25) == "high"  # below critical since 0.25, but high was seen at 0.25
    assert h.update("normal", 2.5) == "normal"  # below high since 0.5


def test_hysteresis_bounce_restarts_the_wait() -> None:
    h = TierHysteresis()
    h.update("high", 0.0)
    assert h.update("moderate", 1.0) == "high"
    assert h.update("high", 2.5) == "high"  # back up: the run below "high" is broken
    assert h.update("moderate", 3.0) == "high"
    assert h.update("moderate", 4.5) == "high"
    assert h.update("moderate", 5.0) == "moderate"
    assert h.update("high", 5.25) == "high"  # up again at once


# -- the sampler -----------------------------------------------------------------------------------


class ScriptedReader:
    """Returns pressures with the scripted tiers, then repeats the last one."""

    def __init__(self, tiers: Iterable[str]) -> None:
        self.tiers = [cast(PressureTier, t) for t in tiers]
        self.calls = 0
        self.previous: list[Pressure | None] = []

    def __call__(self, previous: Pressure | None) -> Pressure:
        self.previous.append(previous)
        tier = self.tiers[min(self.calls, len(self.tiers) - 1)]
        self.calls += 1
        return Pressure(
            tier=tier,
            ram_percent={"normal": 40.0, "moderate": 82.0, "high": 90.0, "critical": 95.0}[tier],
            timestamp=float(self.calls),
        )


class FakeClock:
    """Advances by ``step`` seconds every time it is read (one read per sample)."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


async def wait_until(predicate: Callable[[], bool], timeout: float = 1.5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


async def test_callback_only_on_tier_change_with_default_hysteresis() -> None:
    # a fake clock of 0.25 s per sample makes the real 2 s hysteresis run in a few milliseconds
    script = ["normal"] * 3 + ["high"] * 3 + ["moderate"] * 4 + ["high"] + ["normal"] * 12
    reader = ScriptedReader(script)
    seen: list[PressureTier] = []
    sampler = PressureSampler(lambda p: seen.append(p.tier), interval=0.001, reader=reader, clock=FakeClock(0.25))
    sampler.start()
    try:
        await wait_until(lambda: reader.calls >= len(script) + 2)
    finally:
        await sampler.stop()
    # moderate never lasted 2 s before high came back, so it was never reported
    assert seen == ["high", "normal"]
    assert sampler.current is not None and sampler.current.tier == "normal"
    assert sampler.tier == "normal"


async def test_hysteresis_with_a_fast_interval_in_real_time() -> None:
    reader = ScriptedReader(["critical"] + ["normal"] * 1000)
    seen: list[tuple[PressureTier, float]] = []
    sampler = PressureSampler(
        lambda p: seen.append((p.tier, time.monotonic())), interval=0.01, reader=reader, downgrade_after_s=0.3
    )
    started = time.monotonic()
    sampler.start()
    try:
        await wait_until(lambda: len(seen) == 2)
        assert sampler.current is not None and sampler.current.tier == "normal"
        assert sampler.raw is not None and sampler.raw.tier == "normal"
    finally:
        await sampler.stop()
    assert [tier for tier, _ in seen] == ["critical", "normal"]
    assert seen[0][1] - started < 0.2  # up: at the first sample
    assert seen[1][1] - started >= 0.3  # down: only after the lower tier held for 0.3 s


async def test_current_carries_the_confirmed_tier() -> None:
    reader = ScriptedReader(["high", "normal"])
    sampler = PressureSampler(interval=0.005, reader=reader, clock=FakeClock(0.01))
    sampler.start()
    try:
        assert sampler.current is not None and sampler.current.tier == "high"  # first sample taken by start()
        await wait_until(lambda: reader.calls >= 3)
        assert sampler.raw is not None and sampler.raw.tier == "normal"
        assert sampler.current is not None and sampler.current.tier == "high"  # still held
        assert sampler.current.ram_percent == 40.0  # ... with the latest numbers
    finally:
        await sampler.stop()
    # the reader gets the previous raw sample, for swap growth
    assert reader.previous[0] is None and reader.previous[1] is not None and reader.previous[1].tier == "high"


async def test_async_callback_and_slow_callbacks_do_not_stall_sampling() -> None:
    reader = ScriptedReader(["moderate"] + ["critical"] * 5 + ["normal"] * 1000)
    seen: list[PressureTier] = []
    release = asyncio.Event()

    async def on_change(p: Pressure) -> None:
        seen.append(p.tier)
        await release.wait()

    sampler = PressureSampler(on_change, interval=0.002, reader=reader, downgrade_after_s=0.05)
    sampler.start()
    try:
        await wait_until(lambda: seen == ["moderate"])
        calls = reader.calls
        await wait_until(lambda: reader.calls > calls + 30)  # sampling goes on while the callback waits
        assert sampler.tier == "normal"
        release.set()
        await asyncio.sleep(0.05)
    finally:
        await sampler.stop()
    # critical came and went while the callback was busy: coalesced into the latest tier
    assert seen == ["moderate", "normal"]


async def test_exceptions_never_kill_the_loop(caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    def flaky(previous: Pressure | None) -> Pressure:
        nonlocal calls
        calls += 1
        if 3 <= calls <= 8:
            raise OSError("psutil hiccup")
        return Pressure(tier="high" if calls > 8 else "normal", timestamp=float(calls))

    seen: list[PressureTier] = []

    def bad_callback(p: Pressure) -> None:
        seen.append(p.tier)
        raise ValueError("plugin bug")

    sampler = PressureSampler(bad_callback, interval=0.002, reader=flaky)
    with caplog.at_level(logging.DEBUG, logger="autotune_core.hardware.sampler"):
        sampler.start()
        try:
            await wait_until(lambda: calls >= 12 and seen == ["high"])
            assert sampler.running
        finally:
            await sampler.stop()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "psutil hiccup" in warnings[0].getMessage()  # repeats go to debug
    assert any("recovered" in r.getMessage() for r in caplog.records)
    assert any("plugin bug" in (r.exc_text or "") or r.exc_info for r in caplog.records if r.levelno >= logging.ERROR)


async def test_stop_cancels_cleanly_and_restart_works() -> None:
    reader = ScriptedReader(["normal"])
    sampler = PressureSampler(lambda p: None, interval=0.005, reader=reader)
    await sampler.stop()  # never started: fine
    sampler.start()
    task = sampler._task
    sampler.start()  # already running: same task
    assert sampler._task is task and sampler.running
    await wait_until(lambda: reader.calls >= 3)
    await sampler.stop()
    assert task is not None and task.done() and not sampler.running
    calls = reader.calls
    await asyncio.sleep(0.03)
    assert reader.calls == calls  # nothing samples after stop
    await sampler.stop()  # twice: fine
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert not [t for t in others if "autotune-pressure" in t.get_name()]

    async with sampler:  # restart, as a context manager
        assert sampler.running
        await wait_until(lambda: reader.calls >= calls + 3)
    assert not sampler.running


async def test_default_reader_on_this_machine() -> None:
    sampler = PressureSampler(interval=0.01)
    async with sampler:
        await wait_until(lambda: sampler.samples >= 3)
    assert sampler.current is not None
    assert 0.0 < sampler.current.ram_percent <= 100.0


def test_start_needs_a_running_loop_and_a_positive_interval() -> None:
    with pytest.raises(RuntimeError):
        PressureSampler().start()
    with pytest.raises(ValueError):
        PressureSampler(interval=0)


def test_a_sampler_survives_its_event_loop() -> None:
    sampler = PressureSampler(interval=0.005, reader=ScriptedReader(["normal"]))

    async def run_briefly(stop: bool) -> bool:
        sampler.start()
        await asyncio.sleep(0.02)
        running = sampler.running
        if stop:
            await sampler.stop()
        return running

    assert asyncio.run(run_briefly(stop=False))  # the loop closes under a running sampler
    assert asyncio.run(run_briefly(stop=True))  # a new loop starts it afresh
    assert not sampler.running
