"""Contract tests: the OpenAI-compatible backend against the fake servers of every flavour."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fakes import FLAVOURS, FakeOpenAI

from autotune_core.backend import KnobScope, reconcile_plan
from autotune_core.errors import BackendUnavailable, ModelNotFound, UpstreamError
from autotune_core.messages import ChatRequest, Message
from autotune_core.plan import Plan
from autotune_plugins.backends.openai_compat import OpenAIBackend, lemonade_args

HELLO = [Message(role="system", content="Be brief."), Message(role="user", content="Hello there")]


def backend_for(fake: FakeOpenAI, **settings: Any) -> OpenAIBackend:
    return OpenAIBackend({"url": fake.url, "timeout": 5.0, **settings})


def model_of(fake: FakeOpenAI) -> str:
    return fake.models[0].name


def req(fake: FakeOpenAI, **kw: Any) -> ChatRequest:
    kw.setdefault("messages", HELLO)
    return ChatRequest(model=model_of(fake), **kw)


async def test_flavour_detection(any_fake_openai: FakeOpenAI) -> None:
    backend = backend_for(any_fake_openai)
    try:
        availability = await backend.available()
    finally:
        await backend.aclose()
    assert availability.ok and backend.flavour == any_fake_openai.flavour
    assert backend.capabilities().dialect == f"openai:{any_fake_openai.flavour}"


async def test_probe_list_skips_dead_urls(fake_llama_server: FakeOpenAI) -> None:
    backend = OpenAIBackend({"url": ["http://127.0.0.1:9", fake_llama_server.url], "probe_timeout": 0.5})
    try:
        await backend.refresh()
    finally:
        await backend.aclose()
    assert backend.url == fake_llama_server.url and backend.flavour == "llama-server"
    dead = OpenAIBackend({"url": "http://127.0.0.1:9", "probe_timeout": 0.5})
    assert not (await dead.available()).ok
    with pytest.raises(BackendUnavailable):
        await dead.chat(ChatRequest(model="x", messages=HELLO), Plan(model="x"))


async def test_chat_and_sse_stream_every_flavour(any_fake_openai: FakeOpenAI) -> None:
    backend = backend_for(any_fake_openai)
    try:
        result = await backend.chat(
            req(any_fake_openai, max_tokens=20, seed=3, stop=["\n\n"]), Plan(model=model_of(any_fake_openai))
        )
        chunks = [c async for c in backend.stream_chat(req(any_fake_openai), Plan(model=model_of(any_fake_openai)))]
    finally:
        await backend.aclose()
    assert result.content == any_fake_openai.response_text
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0
    assert "".join(c.content for c in chunks) == any_fake_openai.response_text
    assert chunks[-1].done and chunks[-1].usage and chunks[-1].usage.completion_tokens > 0
    sent = any_fake_openai.requests_to("/v1/chat/completions")[0].json
    assert sent["seed"] == 3 and sent["stop"] == ["\n\n"] and sent["max_tokens"] == 20
    streamed = any_fake_openai.requests_to("/v1/chat/completions")[-1].json
    assert streamed["stream"] is True and streamed["stream_options"] == {"include_usage": True}


async def test_llama_server_extras(fake_llama_server: FakeOpenAI) -> None:
    backend = backend_for(fake_llama_server)
    model = model_of(fake_llama_server)
    try:
        plan = Plan(model=model, num_ctx=8192, kv_type="q8_0", flash_attn=True, num_batch=1024, num_keep=12, parallel=2)
        await backend.refresh()
        reconcile_plan(plan, backend.capabilities(), backend="openai")
        first = await backend.chat(req(fake_llama_server), plan)
        second = await backend.chat(req(fake_llama_server), Plan(model=model, num_keep=12))
        loaded = await backend.loaded_models()
        tokens = await backend.count_tokens(model, req(fake_llama_server), Plan(model=model))
    finally:
        await backend.aclose()
    assert plan.num_ctx is None and plan.kv_type is None and plan.num_keep == 12
    advice = " ".join(plan.advice)
    assert "-c <n>" in advice and "-ctk" in advice and "-fa on" in advice and "-b <n>" in advice and "-np" in advice
    sent = fake_llama_server.requests_to("/v1/chat/completions")[0].json
    assert sent["cache_prompt"] is True and sent["n_keep"] == 12
    assert not {"num_ctx", "kv_type", "flash_attn", "num_batch", "options"} & set(sent)
    assert first.timings.prompt_ms is not None and first.timings.decode_ms is not None
    assert second.usage.cached_tokens and second.usage.cached_tokens > 0  # timings.cache_n / cached_tokens
    assert loaded[0].context_length == 4096 == fake_llama_server.context_of()
    assert tokens and tokens > 5


async def test_lmstudio_loads_only_on_change(fake_lmstudio: FakeOpenAI) -> None:
    backend = backend_for(fake_lmstudio)
    model = model_of(fake_lmstudio)
    try:
        r1 = await backend.chat(req(fake_lmstudio), Plan(model=model, num_ctx=8192, flash_attn=True))
        r2 = await backend.chat(req(fake_lmstudio), Plan(model=model, num_ctx=8192, flash_attn=True))
        plan3 = Plan(model=model, num_ctx=16384, flash_attn=True, keep_alive=600)
        r3 = await backend.chat(req(fake_lmstudio), plan3)
        plan_kv = Plan(model=model, kv_type="q8_0")
        reconcile_plan(plan_kv, backend.capabilities(), backend="openai")
    finally:
        await backend.aclose()
    loads = fake_lmstudio.requests_to("/api/v1/models/load")
    assert [r.json.get("context_length") for r in loads] == [8192, 16384]
    assert not r1.timings.reloaded and not r2.timings.reloaded and r3.timings.reloaded
    assert backend.reloads == 1 and fake_lmstudio.context_of(model) == 16384
    assert fake_lmstudio.requests_to("/v1/chat/completions")[-1].json["ttl"] == 600
    assert plan_kv.kv_type is None and any("SDK" in a for a in plan_kv.advice)
    assert not any("q8" in str(r.json) for r in loads)  # KV quantization never sent (REST rejects it)


async def test_lemonade_load_options(fake_lemonade: FakeOpenAI) -> None:
    backend = backend_for(fake_lemonade)
    model = model_of(fake_lemonade)
    plan = Plan(model=model, num_ctx=4096, kv_type="q8_0", flash_attn=True, num_batch=512)
    try:
        await backend.chat(req(fake_lemonade), plan)
        await backend.chat(req(fake_lemonade), plan.model_copy())
        await backend.chat(
            req(fake_lemonade), Plan(model=model, num_ctx=8192, kv_type="q8_0", flash_attn=True, num_batch=512)
        )
        loaded = await backend.loaded_models()
    finally:
        await backend.aclose()
    loads = [r.json for r in fake_lemonade.requests if r.path.endswith("/load")]
    assert len(loads) == 2 and loads[0]["ctx_size"] == 4096
    assert loads[0]["llamacpp_args"] == "-ctk q8_0 -ctv q8_0 --flash-attn on -b 512 -ub 512"
    assert backend.reloads == 1 and loaded[0].context_length == 8192
    assert lemonade_args(None, None, None, None) == ""


async def test_vllm_everything_is_server_env(fake_vllm: FakeOpenAI) -> None:
    backend = backend_for(fake_vllm)
    model = model_of(fake_vllm)
    try:
        await backend.refresh()
        caps = backend.capabilities()
        count = await backend.count_tokens(model, req(fake_vllm), Plan(model=model))
        info = await backend.model_info(model)
    finally:
        await backend.aclose()
    assert all(caps.scope(k) is KnobScope.SERVER_ENV for k in ("num_ctx", "kv_type", "num_batch", "parallel"))
    assert "--max-model-len" in caps.knobs["num_ctx"].how and "--kv-cache-dtype" in caps.knobs["kv_type"].how
    assert count and count > 3 and info.context_length == 4096


async def test_tools_and_extra_fields_round_trip(fake_openai: FakeOpenAI) -> None:
    fake_openai.set(tool_calls=[{"name": "lookup", "arguments": {"q": "x y"}}])
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    backend = backend_for(fake_openai)
    model = model_of(fake_openai)
    try:
        result = await backend.chat(
            req(
                fake_openai,
                tools=tools,
                extra={"logit_bias": {"42": -5}, "user": "u1"},
                response_format={"type": "json_object"},
            ),
            Plan(model=model),
        )
        chunks = [c async for c in backend.stream_chat(req(fake_openai, tools=tools), Plan(model=model))]
    finally:
        await backend.aclose()
    sent = fake_openai.requests_to("/v1/chat/completions")[0].json
    assert sent["logit_bias"] == {"42": -5} and sent["user"] == "u1" and sent["tools"] == tools
    assert sent["response_format"] == {"type": "json_object"}
    assert result.tool_calls[0].name == "lookup" and result.tool_calls[0].arguments_dict() == {"q": "x y"}
    calls = [c for chunk in chunks for c in chunk.tool_calls]
    assert len(calls) == 1 and calls[0].arguments_dict() == {"q": "x y"} and chunks[-1].finish_reason == "tool_calls"


async def test_errors_and_stream_cancel(fake_llama_server: FakeOpenAI) -> None:
    backend = backend_for(fake_llama_server)
    model = model_of(fake_llama_server)
    try:
        await backend.refresh()
        fake_llama_server.set(status_override=(500, {"error": {"message": "slot crashed", "code": 500}}))
        with pytest.raises(UpstreamError, match="slot crashed"):
            await backend.chat(req(fake_llama_server), Plan(model=model))
        fake_llama_server.set(status_override=None, chunk_delay=0.05)
        stream = backend.stream_chat(req(fake_llama_server), Plan(model=model))
        assert (await stream.__anext__()).content
        await stream.aclose()
        for _ in range(100):
            if fake_llama_server.client_disconnects:
                break
            await asyncio.sleep(0.02)
        assert fake_llama_server.client_disconnects == 1
    finally:
        await backend.aclose()


async def test_unknown_model_is_model_not_found(fake_vllm: FakeOpenAI) -> None:
    backend = backend_for(fake_vllm)
    try:
        with pytest.raises(ModelNotFound) as info:
            await backend.chat(ChatRequest(model="nope", messages=HELLO), Plan(model="nope"))
    finally:
        await backend.aclose()
    assert model_of(fake_vllm) in info.value.available


def test_every_flavour_classifies_every_knob() -> None:
    from autotune_core.backend import KNOBS

    for flavour in FLAVOURS:
        caps = OpenAIBackend({"flavour": flavour, "url": "http://127.0.0.1:1"}).capabilities()
        assert set(KNOBS) <= set(caps.knobs), flavour


@pytest.mark.parametrize(
    "body",
    [
        "<html>captive portal</html>",
        [1, 2],
        {"choices": "x", "data": 3},
        {"choices": [{"message": "text", "delta": 7}], "data": [{"embedding": 1}]},
    ],
)
async def test_an_answer_autotune_cannot_read_is_an_upstream_error(fake_llama_server: FakeOpenAI, body: Any) -> None:
    backend = backend_for(fake_llama_server)
    try:
        await backend.refresh()
        fake_llama_server.set(status_override=(200, body))
        request = req(fake_llama_server)
        with pytest.raises(UpstreamError, match="sent"):
            await backend.chat(request, Plan(model=request.model))
        with pytest.raises(UpstreamError, match="sent"):
            [c async for c in backend.stream_chat(request, Plan(model=request.model))]
        with pytest.raises(UpstreamError, match="sent"):
            await backend.embed(request.model, ["hi"])
    finally:
        await backend.aclose()
