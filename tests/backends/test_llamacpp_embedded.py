"""End-to-end on the real embedded model (Gemma 3 270M via llama-cpp-python in its worker process).

Short: max_tokens ≤ 16."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from autotune_core.messages import ChatRequest, Message
from autotune_core.plan import Plan
from autotune_plugins.backends.llamacpp import LlamaCppBackend

pytestmark = pytest.mark.embedded
pytest.importorskip("llama_cpp")

MODEL = "gemma3:270m"
SYSTEM = Message(role="system", content="You are a helpful assistant that answers in one short sentence.")


@pytest.fixture(scope="module")
def backend() -> Iterator[LlamaCppBackend]:
    instance = LlamaCppBackend({"n_ctx": 1024})
    yield instance
    asyncio.run(instance.aclose())


def req(*messages: Message, **kw: object) -> ChatRequest:
    return ChatRequest(
        model=MODEL, messages=[SYSTEM, *messages], max_tokens=kw.pop("max_tokens", 8), temperature=0, **kw
    )  # type: ignore[arg-type]


def user(text: str) -> Message:
    return Message(role="user", content=text)


async def test_chat_and_stream_agree(backend: LlamaCppBackend) -> None:
    request = req(user("Name a colour."))
    result = await backend.chat(request, Plan(model=MODEL, num_ctx=1024))
    chunks = [c async for c in backend.stream_chat(request, Plan(model=MODEL, num_ctx=1024))]
    assert result.content and result.usage.completion_tokens > 0
    assert result.usage.prompt_tokens == await backend.count_tokens(MODEL, request, Plan(model=MODEL))
    assert chunks[-1].done and sum(c.done for c in chunks) == 1 and len(chunks) > 2
    assert "".join(c.content for c in chunks) == result.content  # temperature 0: identical
    assert chunks[-1].timings and chunks[-1].timings.decode_ms and chunks[-1].timings.decode_ms > 0
    assert chunks[-1].usage and chunks[-1].usage.cached_tokens == result.usage.prompt_tokens - 1


async def test_reload_only_when_a_load_knob_changes(backend: LlamaCppBackend) -> None:
    request = req(user("Hi"), max_tokens=2)
    await backend.chat(request, Plan(model=MODEL, num_ctx=1024))
    before, loads = backend.reloads, backend.engine.loads
    same = await backend.chat(request, Plan(model=MODEL, num_ctx=1024))
    assert backend.reloads == before and backend.engine.loads == loads and not same.timings.reloaded
    grown = await backend.chat(request, Plan(model=MODEL, num_ctx=2048))
    assert backend.reloads == before + 1 and grown.timings.reloaded
    assert grown.timings.load_ms and grown.timings.load_ms > 10 and backend.engine.last_reload_ms
    kept = Plan(model=MODEL)
    again = await backend.chat(request, kept)
    assert not again.timings.reloaded and backend.reloads == before + 1
    assert kept.num_ctx == 2048 and kept.steps("num_ctx")[-1].plugin == "llamacpp"
    assert (await backend.loaded_models())[0].context_length == 2048


async def test_prefix_reuse_across_turns(backend: LlamaCppBackend) -> None:
    first = await backend.chat(req(user("What is the capital of France?")), Plan(model=MODEL, num_ctx=1024))
    turn2 = req(
        user("What is the capital of France?"), Message(role="assistant", content=first.content), user("And of Spain?")
    )
    second = await backend.chat(turn2, Plan(model=MODEL, num_ctx=1024))
    assert second.usage.prompt_tokens > first.usage.prompt_tokens
    assert second.usage.cached_tokens is not None and second.usage.cached_tokens >= first.usage.prompt_tokens - 1
    other = await backend.chat(
        ChatRequest(model=MODEL, messages=[user("Completely different start.")], max_tokens=2, temperature=0),
        Plan(model=MODEL, num_ctx=1024),
    )
    assert (other.usage.cached_tokens or 0) <= 4  # only "<bos><start_of_turn>user\\n" can match


@pytest.mark.parametrize(("n_ctx", "kv_type"), [(512, "f16"), (2048, "f16"), (2048, "q8_0")])
async def test_kv_bytes_match_llama_cpp(backend: LlamaCppBackend, n_ctx: int, kv_type: str) -> None:
    plan = Plan(model=MODEL, num_ctx=n_ctx, kv_type=kv_type, flash_attn=False)
    await backend.chat(req(user("Hi"), max_tokens=1), plan)
    loaded = backend.engine.loaded
    assert loaded is not None and loaded.kv_bytes_measured is not None
    formula = backend.kv_bytes(loaded.info, loaded.params)
    # llama.cpp logs MiB with two decimals: ±0.005 MiB per cache (global and SWA)
    assert abs(formula - loaded.kv_bytes_measured) <= 2 * 0.005 * 2**20, loaded.kv_log
    if kv_type == "q8_0":
        assert loaded.params.flash_attn and plan.flash_attn is True
        assert any("flash attention" in step.reason for step in plan.steps("flash_attn"))


async def test_closing_the_stream_stops_generation(backend: LlamaCppBackend) -> None:
    stream = backend.stream_chat(req(user("Count from one to fifty."), max_tokens=16), Plan(model=MODEL, num_ctx=1024))
    first = await stream.__anext__()
    assert first.content
    pid = backend.engine.pid
    await stream.aclose()
    deadline = time.monotonic() + 5
    while backend.engine.busy and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert backend.engine.busy == 0, "the worker went on generating for nobody"
    assert backend.engine.pid == pid, "a cancel stops the generation, not the worker"
    after = await backend.chat(req(user("Hi"), max_tokens=2), Plan(model=MODEL, num_ctx=1024))
    assert after.usage.completion_tokens > 0


async def test_keep_alive_zero_unloads_and_embeddings(backend: LlamaCppBackend) -> None:
    await backend.chat(req(user("Hi"), max_tokens=1), Plan(model=MODEL, num_ctx=1024, keep_alive=0))
    assert backend.engine.loaded is None and await backend.loaded_models() == []
    assert backend.engine.pid is None, "unloading ends the worker process"
    await backend.chat(req(user("Hi"), max_tokens=1), Plan(model=MODEL, num_ctx=1024, keep_alive=0.2))
    assert backend.engine.loaded is not None
    deadline = time.monotonic() + 3
    while backend.engine.loaded is not None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert backend.engine.loaded is None
    result = await backend.embed(MODEL, ["hello world", "hello world!", "tax law of 1986"])
    a, b, c = result.vectors
    assert sum(x * y for x, y in zip(a, b, strict=True)) > sum(x * y for x, y in zip(a, c, strict=True))
