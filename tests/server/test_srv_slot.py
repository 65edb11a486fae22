"""The queue slot is an object released in one place: releasing twice (every way out of a request may) frees
one slot, a place in line is left rather than a slot freed, and a slot handed to a waiter that leaves passes on."""

from __future__ import annotations

import asyncio

import pytest

from autotune_core.errors import QueueFull
from autotune_core.server.queue import FairQueue


async def test_release_is_idempotent_for_a_held_slot() -> None:
    queue = FairQueue(max_concurrent=1, max_queued=4, timeout=1.0)
    slot = queue.take()
    assert slot.held and queue.active == 1 and slot.waited_s == 0.0
    slot.release()
    slot.release()
    assert queue.active == 0 and slot.closed
    again = queue.take()  # a double release did not make room for two
    other = queue.take()
    assert again.held and not other.held and queue.depth == 1
    other.release()  # leaves the line: no slot freed
    assert queue.active == 1 and queue.depth == 0
    again.release()
    assert queue.active == 0


async def test_a_waiter_gets_the_slot_and_releases_it_once() -> None:
    queue = FairQueue(max_concurrent=1, max_queued=4, timeout=1.0)
    first = queue.take()
    second = queue.take()
    waiter = asyncio.ensure_future(second.wait())
    await asyncio.sleep(0)
    first.release()
    await asyncio.wait_for(waiter, 1.0)
    assert second.held and second.waited_s >= 0 and queue.active == 1
    second.release()
    second.release()
    assert queue.active == 0


async def test_a_slot_handed_to_a_waiter_that_leaves_is_passed_on() -> None:
    queue = FairQueue(max_concurrent=1, max_queued=4, timeout=1.0)
    first = queue.take()
    leaving, staying = queue.take(), queue.take()
    first.release()  # handed to `leaving`, which has not looked yet
    leaving.release()  # it leaves: the slot goes to `staying`
    assert staying.poll() and queue.active == 1
    staying.release()
    assert queue.active == 0


async def test_a_timed_out_waiter_leaves_the_line_and_release_after_is_harmless() -> None:
    queue = FairQueue(max_concurrent=1, max_queued=4, timeout=0.05)
    holder = queue.take()
    late = queue.take()
    with pytest.raises(QueueFull):
        await late.wait()
    late.release()
    assert queue.depth == 0 and queue.active == 1
    holder.release()
    assert queue.active == 0
