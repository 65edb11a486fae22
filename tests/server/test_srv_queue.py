"""The fair queue: FIFO hand-off, no barging, bounded line, timeouts, no leaked slots; and under load."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from conftest import LiveServer, SlowFake

from autotune_core.errors import QueueFull
from autotune_core.server.queue import FairQueue

MSGS: list[Any] = [{"role": "user", "content": "hi"}]


async def test_a_lowered_cap_retires_freed_slots_and_a_raised_cap_lets_waiters_in() -> None:
    cap: list[int | None] = [None]
    queue = FairQueue(max_concurrent=3, max_queued=5, timeout=2, cap=lambda: cap[0])
    assert [queue.admit() for _ in range(3)] == [None, None, None] and queue.limit == 3
    cap[0] = 1  # e.g. the session advisor under memory pressure
    assert queue.limit == 1
    waiter = queue.admit()
    assert waiter is not None
    queue.release()
    queue.release()  # two freed slots are retired: one request still runs, at the cap
    assert queue.active == 1 and not waiter.future.done()
    queue.release()
    assert waiter.future.done() and queue.active == 1  # the last slot is handed on, FIFO
    await queue.wait(waiter)
    late = queue.admit()
    assert late is not None
    cap[0] = None  # back to the configured 3: the next admission lets the waiter in without a release
    newcomer = queue.admit()  # queues behind `late`; the dispatch lets both in, oldest first
    assert newcomer is not None and late.future.done() and newcomer.future.done()
    assert queue.active == 3 and queue.limit == 3
    cap[0] = 0
    assert queue.limit == 1  # never below one slot


async def test_fifo_handoff_and_no_barging() -> None:
    queue = FairQueue(max_concurrent=1, max_queued=5, timeout=2)
    assert queue.admit() is None and queue.active == 1
    order: list[int] = []

    async def waiter(i: int) -> None:
        ticket = queue.admit()
        assert ticket is not None
        await queue.wait(ticket)
        order.append(i)
        await asyncio.sleep(0.01)
        queue.release()

    tasks = [asyncio.create_task(waiter(i)) for i in range(4)]
    await asyncio.sleep(0.01)
    assert queue.depth == 4
    queue.release()  # the slot goes to waiter 0, not to a newcomer
    newcomer = queue.admit()
    assert newcomer is not None, "a newcomer must queue behind waiters, not barge in"
    queue.abandon(newcomer)
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert order == [0, 1, 2, 3]
    assert queue.active == 0 and queue.depth == 0


async def test_full_line_rejects_at_once_with_retry_after() -> None:
    queue = FairQueue(max_concurrent=1, max_queued=1, timeout=2)
    queue.admit()
    ticket = queue.admit()
    with pytest.raises(QueueFull) as full:
        queue.admit()
    assert full.value.code == "queue_full" and full.value.retry_after >= 1 and full.value.status == 429
    assert ticket is not None
    queue.abandon(ticket)
    queue.release()
    assert queue.active == 0 and queue.depth == 0


async def test_timeout_and_cancellation_leave_no_slot_behind() -> None:
    queue = FairQueue(max_concurrent=1, max_queued=4, timeout=0.05)
    queue.admit()
    ticket = queue.admit()
    assert ticket is not None
    with pytest.raises(QueueFull) as late:
        await queue.wait(ticket)
    assert late.value.code == "queue_timeout"
    assert queue.depth == 0
    # a waiter cancelled after the slot was handed to it passes the slot on
    ticket = queue.admit()
    assert ticket is not None
    task = asyncio.create_task(queue.wait(ticket, timeout=5))
    await asyncio.sleep(0)
    queue.release()  # handed to the ticket...
    task.cancel()  # ...whose owner leaves before using it
    with pytest.raises(asyncio.CancelledError):
        await task
    assert queue.active == 0 and queue.depth == 0


def test_fifty_concurrent_requests_against_a_small_queue(live_factory: Any) -> None:
    live: LiveServer = live_factory(
        fake={"chat_delay": 0.05, "chunk_delay": 0.01},
        backend=SlowFake,
        max_concurrent=2,
        max_queued=6,
        queue_timeout=5,
    )

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=live.url, timeout=20, limits=httpx.Limits(max_connections=60)) as client:

            async def one(i: int) -> httpx.Response:
                if i % 3 == 0:
                    return await client.post(
                        "/v1/chat/completions", json={"model": "llama3.2:1b", "messages": MSGS, "stream": True}
                    )
                if i % 3 == 1:
                    return await client.post(
                        "/v1/chat/completions", json={"model": "llama3.2:1b", "messages": MSGS, "stream": False}
                    )
                return await client.post("/api/chat", json={"model": "llama3.2:1b", "messages": MSGS, "stream": False})

            return await asyncio.gather(*(one(i) for i in range(50)))

    responses = asyncio.run(burst())
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 429}, statuses
    rejected = [r for r in responses if r.status_code == 429]
    assert rejected and len(rejected) < 50
    assert all(int(r.headers["retry-after"]) >= 1 for r in rejected)
    assert {r.json()["error"]["code"] for r in rejected if r.request.url.path.startswith("/v1")} <= {"queue_full"}
    assert all(
        r.json()["message"]["content"] for r in responses if r.status_code == 200 and r.request.url.path == "/api/chat"
    )
    streamed = [r for r in responses if r.status_code == 200 and r.headers["content-type"].startswith("text/event")]
    assert streamed and all(r.text.rstrip().endswith("data: [DONE]") for r in streamed)
    live.wait_idle()
    health = httpx.get(live.url + "/health", timeout=5).json()
    assert health["queue"]["active"] == 0 and health["queue"]["queued"] == 0
    metrics = httpx.get(live.url + "/metrics", timeout=5).text
    assert 'autotune_queue_rejected_total{reason="queue_full"}' in metrics
    assert "autotune_queue_wait_seconds_count" in metrics


def two_streams(live: LiveServer) -> tuple[httpx.Response, httpx.Response]:
    """Start a stream, and 50 ms later a second one that has to wait behind it (max_concurrent=1)."""

    async def run() -> tuple[httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
            body = {"model": "llama3.2:1b", "messages": MSGS, "stream": True}
            first = asyncio.create_task(client.post("/v1/chat/completions", json=body))
            await asyncio.sleep(0.05)
            second = await client.post("/v1/chat/completions", json=body)
            return await first, second

    return asyncio.run(run())


def test_queued_stream_gets_keepalive_comments_then_answers(live_factory: Any) -> None:
    live: LiveServer = live_factory(fake={"chunk_delay": 0.08}, keepalive_interval=0.05, max_concurrent=1)
    first, second = (response.text for response in two_streams(live))
    assert second.startswith(": queued\n\n")
    assert second.rstrip().endswith("data: [DONE]") and '"content":" backend."' in second
    assert ": queued" not in first
    # the headers went out before the plan existed: the plan follows as comments, before the first event
    comments = second[: second.index("data: ")]
    assert ": x-autotune-plan: " in comments and ": x-autotune-overhead-ms: " in comments
    live.wait_idle()
    assert live.state.metrics.overhead.count() == 2


def test_a_stream_that_waits_briefly_gets_real_headers_and_a_real_429(live_factory: Any) -> None:
    """Within one keep-alive interval nothing is committed: a slot brings the plan headers, a timeout a 429."""
    live: LiveServer = live_factory(
        fake={"chunk_delay": 0.02}, keepalive_interval=5.0, max_concurrent=1, queue_timeout=0.3
    )
    _, served = two_streams(live)  # the first stream ends well within the wait
    assert served.status_code == 200 and "x-autotune-plan" in served.headers
    assert ": queued" not in served.text and served.text.rstrip().endswith("data: [DONE]")
    live.fake.chunk_delay = 0.2
    _, refused = two_streams(live)  # now the first stream outlasts queue_timeout
    assert refused.status_code == 429 and refused.headers["retry-after"]
    assert refused.json()["error"]["code"] == "queue_timeout"
    live.wait_idle()
    assert live.state.metrics.queue_rejected.get({"reason": "queue_timeout"}) == 1


def test_queued_stream_times_out_in_band(live_factory: Any) -> None:
    live: LiveServer = live_factory(
        fake={"chunk_delay": 0.1}, keepalive_interval=0.05, max_concurrent=1, queue_timeout=0.15
    )
    _, second = two_streams(live)
    assert '"code":"queue_timeout"' in second.text and second.text.rstrip().endswith("data: [DONE]")
    # counted as what it was, although the status line said 200
    assert live.state.metrics.queue_rejected.get({"reason": "queue_timeout"}) == 1
    assert live.state.metrics.requests.get({"door": "openai", "endpoint": "/v1/chat/completions", "status": "429"}) == 1
    live.wait_idle()
