"""Contract tests: the Ollama backend against the fake Ollama on 127.0.0.1 (tests/fakes)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from fakes import FakeOllama

from autotune_core.backend import KnobScope, reconcile_plan
from autotune_core.errors import BackendUnavailable, ModelNotFound, UpstreamError, UpstreamTimeout
from autotune_core.messages import ChatRequest, Message, ToolCall
from autotune_core.plan import Plan
from autotune_plugins.backends.ollama import OllamaBackend, keep_alive_value, ollama_format

HELLO = [Message(role="system", content="You are terse."), Message(role="user", content="Hello there")]
MODEL = "llama3.2:1b"


def backend_for(fake: FakeOllama, **settings: Any) -> OllamaBackend:
    return OllamaBackend({"url": fake.url, "timeout": 5.0, **settings})


def req(**kw: Any) -> ChatRequest:
    kw.setdefault("model", MODEL)
    kw.setdefault("messages", HELLO)
    return ChatRequest(**kw)


def plan(**kw: Any) -> Plan:
    kw.setdefault("model", MODEL)
    return Plan(**kw)


def chat_bodies(fake: FakeOllama) -> list[dict[str, Any]]:
    return [r.json for r in fake.requests_to("/api/chat")]


async def test_chat_uses_native_api_and_maps_timings(fake_ollama: FakeOllama) -> None:
    backend = backend_for(fake_ollama)
    try:
        result = await backend.chat(req(max_tokens=5), plan(num_ctx=2048))
    finally:
        await backend.aclose()
    assert result.content and result.backend == "ollama"
    assert result.usage.completion_tokens > 0 and result.usage.prompt_tokens > 0
    t = result.timings
    assert t.load_ms == pytest.approx(250.0) and t.prompt_ms and t.decode_ms and t.total_ms
    assert t.ttft_ms == pytest.approx(t.load_ms + t.prompt_ms)
    assert not t.reloaded  # first load is a load, not a reload
    assert all(not r.path.startswith("/v1") for r in fake_ollama.requests)
    body = chat_bodies(fake_ollama)[0]
    assert body["options"]["num_ctx"] == 2048 and body["options"]["num_predict"] == 5
    assert result.raw["engine"] == "llama-server"


async def test_plan_knobs_ollama_cannot_take_are_never_sent_and_client_options_pass_verbatim(
    fake_ollama: FakeOllama,
) -> None:
    backend = backend_for(fake_ollama)
    p = plan(num_ctx=4096, kv_type="q8_0", flash_attn=True, parallel=2, num_keep=24, keep_alive=600)
    reconcile_plan(p, backend.capabilities(), backend="ollama")
    assert p.kv_type is None and p.flash_attn is None and p.parallel is None
    assert any("OLLAMA_KV_CACHE_TYPE" in a for a in p.advice)
    assert any("OLLAMA_FLASH_ATTENTION" in a for a in p.advice)
    assert any("OLLAMA_NUM_PARALLEL" in a for a in p.advice)
    client_options = {
        "f16_kv": False,
        "flash_attn": True,
        "kv_cache_type": "q8_0",
        "mirostat": 2,
        "low_vram": True,
        "num_thread": 2,
    }
    try:
        await backend.chat(req(options=client_options, temperature=0.2), p)
    finally:
        await backend.aclose()
    body = chat_bodies(fake_ollama)[0]
    # the client's own options reach Ollama as sent (it ignores the ones it no longer knows, as it would
    # without autotune); autotune's own option names (kv_cache_type, read by kv-precision) are not forwarded,
    # and the plan adds only what Ollama honours per request
    assert body["options"] == {
        "f16_kv": False,
        "flash_attn": True,
        "mirostat": 2,
        "low_vram": True,
        "num_thread": 2,
        "temperature": 0.2,
        "num_ctx": 4096,
        "num_keep": 24,
    }
    assert body["keep_alive"] == 600
    assert sorted(fake_ollama.ignored_options) == ["f16_kv", "flash_attn", "low_vram", "mirostat"]  # the client's
    assert "flash_attn" not in body and "kv_type" not in body


def test_capabilities_match_research() -> None:
    caps = OllamaBackend({}).capabilities()
    assert caps.scope("num_ctx") is KnobScope.AT_LOAD and caps.knobs["num_ctx"].reloads
    assert caps.scope("num_batch") is KnobScope.AT_LOAD
    assert caps.scope("kv_type") is KnobScope.SERVER_ENV and "OLLAMA_KV_CACHE_TYPE" in caps.knobs["kv_type"].how
    assert caps.scope("flash_attn") is KnobScope.SERVER_ENV
    assert caps.scope("parallel") is KnobScope.SERVER_ENV and "OLLAMA_NUM_PARALLEL" in caps.knobs["parallel"].how
    assert caps.scope("keep_alive") is KnobScope.PER_REQUEST and caps.scope("num_keep") is KnobScope.PER_REQUEST


async def test_reload_when_num_ctx_changes_is_detected_and_counted(fake_ollama: FakeOllama) -> None:
    backend = backend_for(fake_ollama)
    try:
        first = await backend.chat(req(), plan(num_ctx=2048))
        same = await backend.chat(req(), plan(num_ctx=2048))
        changed = await backend.chat(req(), plan(num_ctx=8192))
    finally:
        await backend.aclose()
    assert not first.timings.reloaded and not same.timings.reloaded
    assert same.timings.load_ms is not None and same.timings.load_ms < 1
    assert changed.timings.reloaded and changed.timings.load_ms == pytest.approx(250.0)
    assert backend.reloads == 1 and fake_ollama.reloads == 1


async def test_num_ctx_is_resent_when_the_plan_has_none(fake_ollama: FakeOllama) -> None:
    backend = backend_for(fake_ollama)
    try:
        await backend.chat(req(), plan(num_ctx=8192, num_batch=256))
        later = plan()
        result = await backend.chat(req(), later)
    finally:
        await backend.aclose()
    bodies = chat_bodies(fake_ollama)
    assert bodies[1]["options"]["num_ctx"] == 8192 and bodies[1]["options"]["num_batch"] == 256
    assert fake_ollama.reloads == 0 and not result.timings.reloaded
    steps = later.steps("num_ctx")
    assert steps and steps[-1].plugin == "ollama" and steps[-1].new == 8192 and "reload" in steps[-1].reason


async def test_without_the_resend_ollama_would_reload(fake_ollama: FakeOllama) -> None:
    """The fake really reloads when num_ctx is omitted: proves the test above can fail."""
    backend = backend_for(fake_ollama)
    try:
        await backend.chat(req(), plan(num_ctx=8192))
        body = backend.build_body(req(), plan(), stream=False)
        body["options"].pop("num_ctx")
        await backend.client.request("POST", "/api/chat", json=body)
    finally:
        await backend.aclose()
    assert fake_ollama.reloads == 1


async def test_streaming_ndjson(fake_ollama: FakeOllama) -> None:
    backend = backend_for(fake_ollama)
    chunks = []
    try:
        async for chunk in backend.stream_chat(req(), plan(num_ctx=2048)):
            chunks.append(chunk)
    finally:
        await backend.aclose()
    assert len(chunks) > 3 and chunks[-1].done and sum(c.done for c in chunks) == 1
    text = "".join(c.content for c in chunks)
    assert text == fake_ollama.response_text
    assert chunks[-1].usage and chunks[-1].usage.completion_tokens > 0
    assert chunks[-1].timings and chunks[-1].timings.load_ms == pytest.approx(250.0)
    assert chat_bodies(fake_ollama)[0]["stream"] is True


async def test_stream_close_cancels_upstream(fake_ollama: FakeOllama) -> None:
    fake_ollama.set(chunk_delay=0.05)
    backend = backend_for(fake_ollama)
    try:
        stream = backend.stream_chat(req(), plan())
        first = await stream.__anext__()
        assert first.content
        await stream.aclose()
        for _ in range(100):
            if fake_ollama.client_disconnects:
                break
            await asyncio.sleep(0.02)
    finally:
        await backend.aclose()
    assert fake_ollama.client_disconnects == 1


async def test_tools_round_trip(fake_ollama: FakeOllama) -> None:
    fake_ollama.set(tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris"}}])
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    backend = backend_for(fake_ollama)
    try:
        result = await backend.chat(req(tools=tools), plan())
        assert result.finish_reason == "tool_calls"
        call = result.tool_calls[0]
        assert call.name == "get_weather" and call.arguments_dict() == {"city": "Paris"}
        history = [
            *HELLO,
            Message(role="assistant", tool_calls=[call]),
            Message(role="tool", content="18C", name="get_weather", tool_call_id=call.id),
        ]
        streamed = [c async for c in backend.stream_chat(req(messages=history, tools=tools), plan())]
    finally:
        await backend.aclose()
    second = chat_bodies(fake_ollama)[1]
    assert second["tools"] == tools
    assert second["messages"][2]["tool_calls"] == [
        {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    ]
    assert second["messages"][3]["tool_name"] == "get_weather"
    calls = [c for chunk in streamed for c in chunk.tool_calls]
    assert calls and calls[0].arguments_dict() == {"city": "Paris"}
    assert streamed[-1].finish_reason == "tool_calls"


async def test_wire_translation_of_request_fields(fake_ollama: FakeOllama) -> None:
    backend = backend_for(fake_ollama)
    messages = [
        Message(role="developer", content="sys"),
        Message(role="user", content="look", images=["data:image/png;base64,QUJD"]),
    ]
    request = req(
        messages=messages,
        stop=["\n\n"],
        seed=7,
        temperature=0.1,
        think=False,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
    )
    body = backend.build_body(request, plan(sampling={"temperature": 0.7, "top_k": 20}, keep_alive=-5), stream=False)
    assert body["messages"][0]["role"] == "system"
    assert body["messages"][1]["images"] == ["QUJD"]
    assert body["format"] == {"type": "object"}
    assert body["options"]["temperature"] == 0.1  # client wins over the plan default
    assert body["options"]["top_k"] == 20  # plan default used where the client sent none
    assert body["options"]["stop"] == ["\n\n"] and body["options"]["seed"] == 7
    assert body["keep_alive"] == -1 and body["think"] is False
    assert ollama_format({"type": "json_object"}) == "json"
    assert keep_alive_value("3600") == 3600 and keep_alive_value("10m") == "10m" and keep_alive_value(0) == 0


async def test_completion_uses_generate(fake_ollama: FakeOllama) -> None:
    backend = backend_for(fake_ollama)
    try:
        result = await backend.chat(ChatRequest(model=MODEL, kind="completion", prompt="Once upon"), plan())
    finally:
        await backend.aclose()
    assert result.content == fake_ollama.response_text
    assert fake_ollama.requests_to("/api/generate")


async def test_introspection(fake_ollama: FakeOllama) -> None:
    backend = backend_for(fake_ollama)
    try:
        assert (await backend.available()).version == "0.30.2"
        names = [m.name for m in await backend.list_models()]
        info = await backend.model_info("gemma3:270m")
        again = await backend.model_info("gemma3:270m")
        await backend.chat(req(), plan(num_ctx=3072))
        loaded = await backend.loaded_models()
        assert await backend.unload(MODEL)
        after = await backend.loaded_models()
        embedded = await backend.embed("nomic-embed-text", ["hello world", "bye"])
    finally:
        await backend.aclose()
    assert "llama3.2:1b" in names
    assert info is again and len(fake_ollama.requests_to("/api/show")) == 1
    assert info.architecture == "gemma3" and info.block_count == 18 and info.head_count_kv == 1
    assert info.key_length == 256 and info.sliding_window == 512 and info.context_length == 32768
    assert info.swa_layers is not None and sum(not s for s in info.swa_layers) == 3
    assert info.quantization == "Q8_0" and info.size_bytes == 291_554_930
    assert [(m.name, m.context_length) for m in loaded] == [("llama3.2:1b", 3072)]
    assert after == []
    assert len(embedded.vectors) == 2 and len(embedded.vectors[0]) == 64


async def test_model_info_fallback_head_dims_and_per_layer_kv(fake_ollama_factory: Any) -> None:
    from fakes import FakeModel

    model = FakeModel(name="hybrid:1b", block_count=4, head_count=8, head_count_kv=[2, 0, 2, 0], embedding_length=512)
    fake = fake_ollama_factory(models=[model])
    backend = backend_for(fake)
    try:
        info = await backend.model_info("hybrid:1b")
    finally:
        await backend.aclose()
    assert info.kv_heads() == [2, 0, 2, 0] and info.key_length is None
    assert info.kv_elements_per_token() == 4 * (64 + 64)  # 512/8 = 64 dims, only 2 layers hold KV


async def test_version_differences(fake_ollama_factory: Any) -> None:
    old = backend_for(fake_ollama_factory(version="0.24.0"))
    v030 = backend_for(fake_ollama_factory(version="0.30.0"))
    try:
        r_old = await old.chat(req(), plan())
        r_030 = await v030.chat(req(), plan())
    finally:
        await old.aclose()
        await v030.aclose()
    assert old.engine == "ollama-runner" and r_old.raw["prompt_eval_count_includes_cached"]
    assert v030.engine == "llama-server" and not r_030.raw["prompt_eval_count_includes_cached"]


async def test_errors_are_mapped(fake_ollama: FakeOllama) -> None:
    backend = backend_for(fake_ollama)
    try:
        with pytest.raises(ModelNotFound) as missing:
            await backend.chat(req(model="nope:7b"), plan(model="nope:7b"))
        assert "llama3.2:1b" in missing.value.available
        fake_ollama.set(status_override=(500, {"error": "model runner crashed"}))
        with pytest.raises(UpstreamError, match="model runner crashed"):
            await backend.chat(req(), plan())
        with pytest.raises(UpstreamError, match="model runner crashed"):
            [c async for c in backend.stream_chat(req(), plan())]
        fake_ollama.set(status_override=None, error_mid_stream_after=2)
        with pytest.raises(UpstreamError):
            [c async for c in backend.stream_chat(req(), plan())]
    finally:
        await backend.aclose()


@pytest.mark.parametrize(
    "body",
    [
        "<html>captive portal</html>",
        [1, 2],
        {"message": "not an object", "done": True},
        {"embeddings": 5, "message": {"content": 3, "tool_calls": "x"}, "done": True},
    ],
)
async def test_an_answer_autotune_cannot_read_is_an_upstream_error(fake_ollama: FakeOllama, body: Any) -> None:
    """200 with the wrong body (a captive portal, a different server): the server's failure (502), not a crash."""
    backend = backend_for(fake_ollama)
    try:
        await backend.version()
        fake_ollama.set(status_override=(200, body))
        with pytest.raises(UpstreamError, match="Ollama sent"):
            await backend.chat(req(), plan())
        with pytest.raises(UpstreamError, match="Ollama sent"):
            [c async for c in backend.stream_chat(req(), plan())]
        with pytest.raises(UpstreamError, match="Ollama sent"):
            await backend.embed("llama3.2:1b", ["hi"])
    finally:
        await backend.aclose()


async def test_timeout_and_refused(fake_ollama: FakeOllama) -> None:
    fake_ollama.set(hang=True, hang_seconds=5)
    backend = backend_for(fake_ollama, timeout=0.3)
    try:
        await backend.version()
        with pytest.raises(UpstreamTimeout):
            await backend.chat(req(), plan())
    finally:
        await backend.aclose()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = OllamaBackend({"url": f"http://127.0.0.1:{port}", "timeout": 2})
    try:
        with pytest.raises(BackendUnavailable):
            await dead.chat(req(), plan())
        availability = await dead.available()
    finally:
        await dead.aclose()
    assert not availability.ok and "not reachable" in availability.reason


def test_tool_call_arguments_are_objects() -> None:
    backend = OllamaBackend({})
    body = backend.build_body(
        req(messages=[Message(role="assistant", tool_calls=[ToolCall(name="f", arguments='{"a": 1}')])]),
        plan(),
        stream=False,
        commit=False,
    )
    assert body["messages"][0]["tool_calls"][0]["function"]["arguments"] == {"a": 1}
