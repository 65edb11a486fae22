"""unless_hung_up: a client that leaves cancels the work, in the caller's own task; quick work is not watched."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from autotune_core.server.hangup import WATCH_AFTER_S, ClientDisconnected, unless_hung_up


class Receive:
    """An ASGI ``receive`` after the body: blocks until ``leave()``, then reports the disconnect."""

    def __init__(self) -> None:
        self.calls = 0
        self.gone = asyncio.Event()

    def leave(self) -> None:
        self.gone.set()

    async def __call__(self) -> dict[str, Any]:
        self.calls += 1
        await self.gone.wait()
        return {"type": "http.disconnect"}


async def test_quick_work_holding_its_slot_is_never_watched() -> None:
    receive = Receive()

    async def quick() -> str:
        await asyncio.sleep(0)
        return "done"

    assert await unless_hung_up(receive, quick(), watch_after=WATCH_AFTER_S) == "done"
    await asyncio.sleep(WATCH_AFTER_S * 2)
    assert receive.calls == 0  # no watcher task was started, and none starts later


@pytest.mark.parametrize("watch_after", [0.0, WATCH_AFTER_S])
async def test_a_hang_up_cancels_long_work_and_its_cleanup_runs(watch_after: float) -> None:
    receive = Receive()
    cleaned: list[bool] = []

    async def long() -> None:
        try:
            await asyncio.sleep(30)
        finally:
            cleaned.append(True)

    loop = asyncio.get_running_loop()
    loop.call_later(watch_after + 0.05, receive.leave)
    started = loop.time()
    with pytest.raises(ClientDisconnected):
        await unless_hung_up(receive, long(), watch_after=watch_after)
    assert loop.time() - started < 2
    assert cleaned == [True]
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0  # the task is usable afterwards
    await asyncio.sleep(0)


async def test_another_cancellation_is_not_called_a_hang_up() -> None:
    receive = Receive()
    job = asyncio.ensure_future(unless_hung_up(receive, asyncio.sleep(30)))
    await asyncio.sleep(0.01)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
