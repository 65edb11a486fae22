"""A time limit on one awaitable, run in the caller's task.

Why not ``asyncio.timeout``: every whole answer waits on the model server under the upstream timeout, and
``asyncio.timeout`` costs ~6 us a request on uvloop (a context manager object, its state machine and a
reschedule); this is one timer and one closure (~2.5 us, ``bench/request_cpu.py --instructions``: 31 k of
~1,540 k instructions a request). The contract is the same: on expiry the task is cancelled, and the
cancellation is turned into ``TimeoutError`` only if nobody else cancelled the task meanwhile (a client that
hangs up, a shutdown), so those still see ``CancelledError``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


async def within(seconds: float, work: Coroutine[Any, Any, T]) -> T:
    """``await work``, raising ``TimeoutError`` if it takes longer than ``seconds``."""
    task = asyncio.current_task()
    assert task is not None, "within() runs inside a task"
    cancelling = task.cancelling()
    fired = False

    def expire() -> None:
        nonlocal fired
        fired = True
        task.cancel()

    timer = asyncio.get_running_loop().call_later(seconds, expire)
    try:
        return await work
    except asyncio.CancelledError:
        if fired:
            fired = False  # our cancellation is undone here, once
            if task.uncancel() <= cancelling:
                raise TimeoutError from None
        raise  # somebody else's cancellation (a hang-up, a shutdown) goes on as such
    finally:
        timer.cancel()
        if fired:  # expired, but the work swallowed the cancellation and returned: undo ours
            task.uncancel()
