"""``within``: asyncio.timeout's contract for one awaitable (the upstream timeout of every whole answer)."""

from __future__ import annotations

import asyncio

import pytest

from autotune_core.server.deadline import within


async def _answer(delay: float, value: str = "ok") -> str:
    await asyncio.sleep(delay)
    return value


async def _handler(limit: float, outcome: list[str]) -> None:
    """A request handler waiting on a slow upstream under ``within``: notes how it ended."""
    try:
        await within(limit, _answer(5.0))
    except TimeoutError:
        outcome.append("timeout")
    except asyncio.CancelledError:
        outcome.append("cancelled")
        raise


async def test_returns_the_result_in_time_and_leaves_no_cancellation() -> None:
    assert await within(1.0, _answer(0.0)) == "ok"
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0)  # no cancellation pending either


async def test_too_slow_raises_timeout_error_and_the_task_goes_on() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        await within(0.05, _answer(5.0))
    assert loop.time() - started < 1.0
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    assert await within(1.0, _answer(0.01, "next")) == "next"  # the task is usable afterwards


async def test_the_timer_is_gone_after_a_fast_answer() -> None:
    await within(0.05, _answer(0.0))
    await asyncio.sleep(0.1)  # past the limit: a live timer would cancel this sleep
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_someone_elses_cancellation_stays_a_cancellation() -> None:
    """A client that hangs up cancels the handler's task: that must not turn into a 504."""
    outcome: list[str] = []
    task = asyncio.ensure_future(_handler(10.0, outcome))
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert outcome == ["cancelled"]


async def test_both_at_once_the_outer_cancellation_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Expiry and an outer cancel before the task runs again: the outer one is not swallowed into a
    TimeoutError (the expiry callback is captured and fired by hand, so the order is exact)."""
    loop = asyncio.get_running_loop()
    timers: list[asyncio.TimerHandle] = []
    expiries = []
    real_call_later = loop.call_later

    def capture(delay: float, callback, *args):  # type: ignore[no-untyped-def]
        expiries.append(callback)
        timers.append(real_call_later(delay, callback, *args))
        return timers[-1]

    monkeypatch.setattr(loop, "call_later", capture)
    outcome: list[str] = []
    task = asyncio.ensure_future(_handler(60.0, outcome))
    await asyncio.sleep(0)  # the handler is waiting inside within()
    assert expiries[0].__name__ == "expire"  # (the sleep inside the work has a timer too)
    expiries[0]()  # the limit passes ...
    task.cancel()  # ... and the client hangs up, before the task runs again
    with pytest.raises(asyncio.CancelledError):
        await task
    assert outcome == ["cancelled"]
    assert timers[0].cancelled()


async def test_work_that_swallows_the_cancellation_returns_and_is_uncancelled() -> None:
    async def stubborn() -> str:
        try:
            await asyncio.sleep(5.0)
        except asyncio.CancelledError:
            return "finished anyway"
        return "slept"

    assert await within(0.02, stubborn()) == "finished anyway"
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
