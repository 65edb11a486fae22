"""Slot-aware admission: the queue learns how many requests the model server runs at once and keeps every
slot busy plus a lookahead, with FIFO order, max_queued, 429 + Retry-After and the default of 2 intact."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import LiveServer, serve, settings
from fakes.fake_openai import FakeOpenAI

from autotune_core.host import PluginHost
from autotune_core.server.queue import FairQueue, admission_limit, lookahead
from autotune_core.testing import make_hardware
from autotune_plugins.backends.openai_compat import OpenAIPlugin


def test_admission_limit_is_every_slot_plus_a_lookahead_never_below_the_default() -> None:
    assert [lookahead(n) for n in (1, 2, 3, 4, 8)] == [1, 1, 2, 2, 4]
    assert admission_limit(4, 2) == 6 and admission_limit(8, 2) == 12
    assert admission_limit(1, 2) == 2  # the embedded worker: one running, one waiting (as before)
    assert admission_limit(None, 2) == 2 and admission_limit(0, 2) == 2  # unknown: the laptop default


async def test_the_queue_follows_the_servers_slots_live_unless_max_concurrent_is_fixed() -> None:
    slots: list[int | None] = [None]
    cap: list[int | None] = [None]
    queue = FairQueue(2, 8, 1, cap=lambda: cap[0], slots=lambda: slots[0], fixed=False)
    assert queue.limit == 2 and queue.slots is None
    slots[0] = 4
    assert queue.limit == 6 and queue.slots == 4
    assert [queue.admit() for _ in range(6)] == [None] * 6
    waiter = queue.admit()
    assert waiter is not None  # the seventh waits, FIFO as ever
    cap[0] = 3  # the session advisor under memory pressure still lowers it
    assert queue.limit == 3
    queue.abandon(waiter)
    fixed = FairQueue(2, 8, 1, slots=lambda: 4, fixed=True)
    assert fixed.limit == 2 and fixed.slots is None


@pytest.fixture
def batching() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI("llama-server", n_slots=4, n_ctx=8192, slot_seconds=0.25)
    fake.start()
    yield fake
    fake.close()


def proxy(fake: FakeOpenAI, **server: Any) -> LiveServer:
    """A live server on the real openai backend before a fake OpenAI server: its slots drive admission."""
    config = settings(**server)
    config.backend_order = ["openai"]
    config.backends["openai"] = {"url": fake.url}
    return serve(PluginHost(config=config, plugins=[OpenAIPlugin()], load_entrypoints=False, hardware=make_hardware()))


async def _send(url: str, count: int, stagger: float) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=64)) as client:

        async def one(i: int) -> httpx.Response:
            await asyncio.sleep(i * stagger)
            return await client.post(
                "/v1/chat/completions",
                json={
                    "model": "llama-3.2-1b-instruct",
                    "max_tokens": 4,
                    "messages": [{"role": "user", "content": f"req-{i}"}],
                },
            )

        return list(await asyncio.gather(*(one(i) for i in range(count))))


def test_a_batching_server_gets_every_slot_busy_plus_the_lookahead_in_fifo_order(batching: FakeOpenAI) -> None:
    live = proxy(batching, max_queued=64)
    try:
        assert live.state.queue.slots == 4 and live.state.queue.limit == 6
        responses = asyncio.run(_send(live.url, 14, 0.02))
        assert [r.status_code for r in responses] == [200] * 14
        gate = batching.gate
        assert gate.max_busy == 4  # every slot was busy...
        assert gate.max_inside == 6  # ...with two more waiting in the server's own queue, never more
        order = [f"req-{i}" for i in range(14)]
        assert gate.arrived == order and gate.started == order  # FIFO end to end
        status = httpx.get(live.url + "/health", timeout=10).json()["queue"]
        assert status["backend_slots"] == 4 and status["limit"] == 6
    finally:
        live.stop()


def test_max_concurrent_set_by_hand_still_wins(batching: FakeOpenAI) -> None:
    live = proxy(batching, max_concurrent=2, max_queued=64)
    try:
        assert live.state.queue.limit == 2
        responses = asyncio.run(_send(live.url, 6, 0.0))
        assert [r.status_code for r in responses] == [200] * 6
        assert batching.gate.max_inside == 2 and batching.gate.max_busy == 2
    finally:
        live.stop()


def test_a_full_line_is_still_refused_with_retry_after(batching: FakeOpenAI) -> None:
    batching.slot_seconds = 1.0
    live = proxy(batching, max_queued=2)
    try:
        responses = asyncio.run(_send(live.url, 11, 0.0))
        codes = sorted(r.status_code for r in responses)
        assert codes == [200] * 8 + [429] * 3  # 6 let through + 2 waiting; the rest refused at once
        refused = [r for r in responses if r.status_code == 429]
        assert all(int(r.headers["Retry-After"]) >= 1 for r in refused)
        assert all(r.json()["error"]["code"] == "queue_full" for r in refused)
        assert batching.gate.max_inside == 6
    finally:
        live.stop()


def test_a_server_that_does_not_say_keeps_the_memory_safe_default(live_factory: Any) -> None:
    live = live_factory()  # the in-process FakeBackend reports no slots
    assert live.state.queue.slots is None and live.state.queue.limit == 2


def test_the_session_advisor_halves_what_the_server_really_lets_through(batching: FakeOpenAI) -> None:
    """Under memory pressure the advisor halves the slot-aware limit (6 → 3), not the config's default (2 → 1)."""
    from autotune_plugins.session_advisor import SessionAdvisorPlugin
    from autotune_plugins.session_advisor.health import Sample

    class Clock:
        now = 1000.0

        def __call__(self) -> float:
            return self.now

    class Pressed:
        def sample(self) -> Sample:
            return Sample(ram_percent=91.0)

    clock = Clock()
    advisor = SessionAdvisorPlugin(sampler=Pressed(), clock=clock)
    config = settings(max_queued=64)
    config.backend_order = ["openai"]
    config.backends["openai"] = {"url": batching.url}
    live = serve(
        PluginHost(config=config, plugins=[OpenAIPlugin(), advisor], load_entrypoints=False, hardware=make_hardware())
    )
    try:
        assert live.host.concurrency_base == 6
        for _ in range(30):  # RAM at 91 %: the advisor's first step is to halve the concurrency
            asyncio.run(advisor.tick_once(Sample(ram_percent=91.0)))
            clock.now += 1
            if live.host.concurrency_cap is not None:
                break
        # (its first tick may have come before the slots were known: the halving is rescaled, 2 → 1 becomes 6 → 3)
        assert live.host.concurrency_cap == 3 and live.state.queue.limit == 3
        assert advisor.advisor is not None and advisor.advisor.applied[0].undo == "6"  # scale-up restores 6
    finally:
        live.stop()


def test_a_reduction_made_before_the_slots_were_known_is_rescaled() -> None:
    from autotune_plugins.session_advisor.health import Advisor, Sample

    now = [1000.0]
    advisor = Advisor(clock=lambda: now[0], max_concurrency=2)
    for _ in range(5):
        advisor.tick(Sample(ram_percent=91.0))
        now[0] += 1
    assert advisor.knobs.concurrency == 1  # half of the config's 2
    advisor.rebase_concurrency(6)  # the queue learnt llama-server's 4 slots: 6 in flight
    assert advisor.knobs.concurrency == 3 and advisor.applied[0].undo == "6"
    advisor.rebase_concurrency(6)
    assert advisor.knobs.concurrency == 3  # idempotent
