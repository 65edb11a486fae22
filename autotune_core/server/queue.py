"""A fair admission queue: at most ``limit`` requests reach the model server at once.

- the limit follows the model server: one that says how many requests it runs at once (its slots) gets
  every slot busy plus a lookahead waiting in its own queue (:func:`admission_limit`), so a freed slot
  starts the next request at its next step instead of idling while the proxy hands one over; one that
  does not say keeps ``max_concurrent`` (2: memory-safe for one laptop model), as does any server when
  ``max_concurrent`` is set explicitly;
- strict FIFO hand-off: a freed slot goes to the oldest live waiter, never to a newcomer (no barging);
- at most ``max_queued`` waiters: one more is refused at once (429 ``queue_full``);
- a waiter gives up after ``timeout`` seconds (429 ``queue_timeout``);
- a waiter that leaves (timeout, client gone) after a slot was handed to it passes the slot on,
  so no slot ever leaks.

Single event loop, no awaits between check and update, so no lock is needed.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable

from ..errors import QueueFull


def lookahead(slots: int) -> int:
    """Requests kept waiting in a batching server's own queue beyond its slots: half the slots, at least one
    (bench/admission_sim.py: 98 % of direct throughput at 4 and 8 slots, against 90 % at one per slot)."""
    return max(1, (slots + 1) // 2)


def admission_limit(slots: int | None, default: int) -> int:
    """How many requests to let through to a server that runs ``slots`` at once (None: unknown, ``default``).
    Never below ``default``: a one-slot server still gets its one request plus one waiting."""
    if slots is None or slots < 1:
        return default
    return max(default, slots + lookahead(slots))


class Ticket:
    """A place in the line. ``future`` resolves when a slot is handed over."""

    __slots__ = ("enqueued", "future", "settled")

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future
        self.enqueued = time.perf_counter()
        self.settled = False


class Slot:
    """One request's claim on the queue: a place in line until granted, then a held slot. :meth:`release`
    gives back whichever it is, once: calling it again (from every way out of a request) does nothing."""

    __slots__ = ("closed", "held_since", "queue", "ticket")

    def __init__(self, queue: FairQueue, ticket: Ticket | None) -> None:
        self.queue = queue
        self.ticket = ticket
        self.held_since: float | None = time.perf_counter() if ticket is None else None
        self.closed = False

    @property
    def held(self) -> bool:
        return self.held_since is not None

    def poll(self) -> bool:
        """Whether the slot is held now (takes it if it was just handed over)."""
        if self.held_since is None and self.ticket is not None and self.queue.granted(self.ticket):
            self.held_since = time.perf_counter()
        return self.held

    async def wait(self) -> None:
        """Wait in line for the slot (429 ``queue_timeout`` after the queue's timeout)."""
        if self.ticket is not None and self.held_since is None:
            await self.queue.wait(self.ticket)
            self.held_since = time.perf_counter()

    @property
    def waited_s(self) -> float:
        """Seconds spent in line (0 for a request that got a slot at once)."""
        if self.ticket is None or self.held_since is None:
            return 0.0
        return self.held_since - self.ticket.enqueued

    def release(self) -> None:
        """Free the slot (or leave the line); idempotent."""
        if self.closed:
            return
        self.closed = True
        if self.held_since is not None:
            self.queue.release(time.perf_counter() - self.held_since)
        elif self.ticket is not None:
            self.queue.abandon(self.ticket)


class FairQueue:
    """FIFO admission with bounded concurrency, a bounded line and a wait timeout."""

    def __init__(
        self,
        max_concurrent: int,
        max_queued: int,
        timeout: float,
        cap: Callable[[], int | None] | None = None,
        slots: Callable[[], int | None] | None = None,
        fixed: bool = True,
    ) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self.max_concurrent = max_concurrent
        #: a live lower limit (the session advisor's recommendation); read at every admission and release
        self._cap = cap
        #: the model server's slots (live, None = unknown); used unless ``fixed`` (max_concurrent set by hand)
        self._slots = None if fixed else slots
        self.max_queued = max(0, max_queued)
        self.timeout = timeout
        self.active = 0
        self._line: deque[Ticket] = deque()
        self._waiting = 0
        #: exponentially weighted mean time a request holds a slot, for Retry-After
        self._service_s = 1.0
        self.admitted = 0
        self.rejected = 0
        self.timed_out = 0

    @property
    def slots(self) -> int | None:
        """The model server's own slot count when it is known and followed (None: not followed or unknown)."""
        return self._slots() if self._slots is not None else None

    @property
    def base(self) -> int:
        """Requests let through before the cap: :func:`admission_limit` of the server's slots, or
        ``max_concurrent`` when it was set by hand or the server does not say."""
        return self.max_concurrent if self._slots is None else admission_limit(self._slots(), self.max_concurrent)

    @property
    def limit(self) -> int:
        """Slots usable now: :attr:`base`, lowered (never raised, never below 1) by the cap."""
        base = self.base
        cap = self._cap() if self._cap is not None else None
        return base if cap is None else max(1, min(base, cap))

    @property
    def depth(self) -> int:
        """Live waiters (not counting ones that already left)."""
        return self._waiting

    def retry_after(self) -> float:
        """A rough estimate of when a slot is likely free: the line ahead times the mean service time."""
        ahead = self._waiting + 1
        return min(60.0, max(1.0, math.ceil(self._service_s * ahead / self.limit)))

    def take(self) -> Slot:
        """A :class:`Slot`: held at once when one is free, else a place in line; 429 when the line is full."""
        return Slot(self, self.admit())

    def admit(self) -> Ticket | None:
        """Take a slot now (None) or a place in line (a Ticket); raise 429 when the line is full."""
        if self.active < self.limit and self._waiting == 0:
            self.active += 1
            self.admitted += 1
            return None
        if self._waiting >= self.max_queued:
            self.rejected += 1
            raise QueueFull(
                f"the request queue is full ({self._waiting} waiting, {self.active} running); retry later",
                retry_after=self.retry_after(),
            )
        ticket = Ticket(asyncio.get_running_loop().create_future())
        self._line.append(ticket)
        self._waiting += 1
        self._dispatch()  # the cap may have risen since the last release
        return ticket

    async def wait(self, ticket: Ticket, timeout: float | None = None) -> None:
        """Wait for the slot; on timeout or cancellation leave the line without leaking a slot."""
        limit = self.timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
                await asyncio.shield(ticket.future)
        except TimeoutError:
            if self.granted(ticket):
                return  # the slot arrived in the same instant: use it
            self.abandon(ticket)
            raise self.timeout_error() from None
        except BaseException:
            self.abandon(ticket)
            raise
        self._settle(ticket)

    def timeout_error(self) -> QueueFull:
        self.timed_out += 1
        return QueueFull(
            f"waited {self.timeout:g} s in the request queue without a free slot; retry later",
            retry_after=self.retry_after(),
            code="queue_timeout",
        )

    def granted(self, ticket: Ticket) -> bool:
        """Whether the slot was handed to this ticket (for callers that poll the future themselves)."""
        if ticket.future.done() and not ticket.future.cancelled():
            self._settle(ticket)
            return True
        return False

    def _settle(self, ticket: Ticket) -> None:
        if not ticket.settled:
            ticket.settled = True
            self._waiting -= 1
            self.admitted += 1

    def abandon(self, ticket: Ticket) -> None:
        """The waiter is leaving: give back a slot it was already handed, else drop its place."""
        if ticket.settled:
            return
        ticket.settled = True
        self._waiting -= 1
        if ticket.future.done() and not ticket.future.cancelled():
            self.release()
        else:
            ticket.future.cancel()

    def release(self, held_s: float | None = None) -> None:
        """Free a slot: hand it to the oldest live waiter, or return it to the pool."""
        if held_s is not None:
            self._service_s = 0.8 * self._service_s + 0.2 * held_s
        self.active -= 1
        if self.active < 0:  # pragma: no cover - a double release is a bug; never go negative
            self.active = 0
        self._dispatch()

    def _dispatch(self) -> None:
        """Hand free slots to the oldest live waiters. Under a lowered cap a freed slot is retired instead;
        when the cap rises again, waiters are let in here without waiting for another release."""
        while self._line and self.active < self.limit:
            ticket = self._line.popleft()
            if not ticket.future.done():
                ticket.future.set_result(None)
                self.active += 1
