"""Stop work for a client that hung up before its answer.

Why: uvicorn does not cancel a handler when the client disconnects, so a non-streaming request whose
client left would keep its place in the queue, then take a slot and make the upstream call for nobody.
Streams have their own watcher (:class:`~autotune_core.server.sse.StreamBody`); this covers everything
that answers in one piece: the wait for a slot, planning and the upstream call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from starlette.types import Receive

from ..errors import AutotuneError

T = TypeVar("T")


class ClientDisconnected(AutotuneError):
    """The client closed the connection before the answer (nginx's 499; nobody reads the body)."""

    type = "client_disconnected"
    status = 499
    code = "client_disconnected"


async def _hangup(receive: Receive) -> None:
    # the body has been read: the only message left is the disconnect
    while (await receive())["type"] != "http.disconnect":
        pass


#: a request that has its slot and is over sooner is not watched (the watcher would cost more than the work a
#: hang-up saves); longer ones (a real generation) are watched from then on
WATCH_AFTER_S = 0.05


async def unless_hung_up(receive: Receive, work: Coroutine[Any, Any, T], *, watch_after: float = 0.0) -> T:
    """Run ``work``; if the client disconnects first, cancel it and raise :class:`ClientDisconnected`.

    Cancelling ``work`` runs its own cleanup (the queue line is left or the slot released, the upstream
    connection closed, plugins get ``post_response``), exactly as for any other failure. ``work`` runs in
    the caller's task: a hang-up cancels this task and is told from any other cancellation by ``hung_up``.
    The watcher starts after ``watch_after`` seconds (a timer until then, not a task): 0 for a request that
    waits in line (a client that leaves it must not get a slot), :data:`WATCH_AFTER_S` for one that holds its
    slot already.
    """
    task = asyncio.current_task()
    assert task is not None
    hung_up = False
    running = True
    watch: asyncio.Future[None] | None = None

    def on_hangup(done: asyncio.Future[None]) -> None:
        nonlocal hung_up
        # a callback scheduled before the watcher was dropped can still run after ``work`` ended: ignore it
        if running and not done.cancelled() and done.exception() is None:
            hung_up = True
            task.cancel()

    def start_watching() -> None:
        nonlocal watch
        if running:
            watch = asyncio.ensure_future(_hangup(receive))
            watch.add_done_callback(on_hangup)

    timer = asyncio.get_running_loop().call_later(watch_after, start_watching) if watch_after > 0 else None
    if timer is None:
        start_watching()
    try:
        result = await work
    except asyncio.CancelledError:
        if hung_up:
            task.uncancel()
            raise ClientDisconnected("the client closed the connection before the answer") from None
        raise
    finally:
        running = False
        if timer is not None:
            timer.cancel()
        if watch is not None:
            watch.remove_done_callback(on_hangup)
            watch.cancel()
    if hung_up:  # ``work`` swallowed the cancellation and finished anyway: undo our request
        task.uncancel()
    return result
