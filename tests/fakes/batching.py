"""A batching server's slots, for the fakes: at most ``n`` requests are worked on at once, the rest wait in
the server's own FIFO queue, as llama-server's ``-np`` slots and vLLM's ``max_num_seqs`` do.

:class:`SlotGate` records what a test needs to judge a proxy in front of it: how many requests were inside
the server at once (working or waiting), how many slots were busy, and in which order requests arrived
and started.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

__all__ = ["SlotGate"]


class SlotGate:
    """FIFO admission to ``slots`` slots. Used from the fake's own event loop only."""

    def __init__(self, slots: int) -> None:
        self.slots = max(1, slots)
        self.busy = 0
        self.inside = 0
        self.max_busy = 0
        self.max_inside = 0
        #: request labels in arrival order and in the order they got a slot
        self.arrived: list[str] = []
        self.started: list[str] = []
        self._waiters: deque[asyncio.Future[None]] = deque()

    def reset(self) -> None:
        self.max_busy = self.max_inside = 0
        self.arrived.clear()
        self.started.clear()

    @contextlib.asynccontextmanager
    async def hold(self, label: str) -> AsyncIterator[None]:
        """Wait for a slot (FIFO), hold it for the body, then hand it to the oldest waiter."""
        self.inside += 1
        self.max_inside = max(self.max_inside, self.inside)
        self.arrived.append(label)
        try:
            if self.busy >= self.slots or self._waiters:
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.append(waiter)
                try:
                    await waiter
                except BaseException:
                    if waiter.done() and not waiter.cancelled():
                        self._release()  # handed a slot while leaving: pass it on
                    else:
                        self._waiters.remove(waiter)
                    raise
            else:
                self.busy += 1
            self.max_busy = max(self.max_busy, self.busy)
            self.started.append(label)
            try:
                yield
            finally:
                self._release()
        finally:
            self.inside -= 1

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the oldest waiter
                return
        self.busy -= 1
