"""The official ``openai`` SDK against a running autotune server on the in-process FakeBackend."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from conftest import LiveServer, Recorder

from autotune_core.messages import ChatRequest, ChatResult, StreamChunk, ToolCall, Usage
from autotune_core.plan import Plan
from autotune_core.testing import FakeBackend

REPLY = "Hello from the fake backend."
MSGS: list[Any] = [{"role": "user", "content": "hi"}]


def sdk(live: LiveServer, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.url + "/v1", api_key=kw.pop("api_key", "none"), timeout=10, max_retries=0, **kw)


class ToolBackend(FakeBackend):
    """Answers with a tool call whenever the request offers tools."""

    CALL = ToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}', index=0)

    async def chat(self, request: ChatRequest, plan: Plan) -> ChatResult:
        if not request.tools:
            return await super().chat(request, plan)
        return ChatResult(
            model=request.model,
            backend=self.name,
            content="",
            tool_calls=[self.CALL],
            finish_reason="tool_calls",
            usage=Usage(prompt_tokens=5, completion_tokens=3),
        )

    async def stream_chat(self, request: ChatRequest, plan: Plan):  # type: ignore[override]
        if not request.tools:
            async for chunk in super().stream_chat(request, plan):
                yield chunk
            return
        yield StreamChunk(tool_calls=[self.CALL])
        yield StreamChunk(done=True, finish_reason="tool_calls", usage=Usage(prompt_tokens=5, completion_tokens=3))


def test_chat_non_streaming(live: LiveServer) -> None:
    raw = sdk(live).chat.completions.with_raw_response.create(model="llama3.2:1b", messages=MSGS)
    reply = raw.parse()
    assert reply.choices[0].message.content == REPLY
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == "llama3.2:1b"
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    assert float(raw.headers["x-autotune-overhead-ms"]) >= 0
    assert "x-autotune-plan" in raw.headers
    assert raw.headers["x-autotune-profile"] == "balanced"
    live.wait_idle()


def test_chat_streaming_with_usage(live: LiveServer) -> None:
    stream = sdk(live).chat.completions.create(
        model="llama3.2:1b", messages=MSGS, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY
    assert chunks[0].choices[0].delta.role == "assistant"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    # as OpenAI: every other chunk carries "usage": null (the key present, the value null)
    raw = httpx.post(
        live.url + "/v1/chat/completions",
        timeout=10,
        json={"model": "llama3.2:1b", "messages": MSGS, "stream": True, "stream_options": {"include_usage": True}},
    ).text
    events = [json.loads(block[6:]) for block in raw.split("\n\n") if block.startswith("data: {")]
    assert all("usage" in event for event in events)
    assert [event["usage"] is None for event in events] == [True] * (len(events) - 1) + [False]
    live.wait_idle()


def test_streaming_without_include_usage_has_no_usage_chunk(live: LiveServer) -> None:
    chunks = list(sdk(live).chat.completions.create(model="llama3.2:1b", messages=MSGS, stream=True))
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)
    raw = httpx.post(
        live.url + "/v1/chat/completions", timeout=10, json={"model": "llama3.2:1b", "messages": MSGS, "stream": True}
    ).text
    assert '"usage"' not in raw


def test_fields_pass_through_into_chat_request(live_factory: Any) -> None:
    recorder = Recorder()
    live = live_factory(recorder)
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    sdk(live).chat.completions.create(
        model="llama3.2:1b",
        messages=MSGS,
        stop=["END", "STOP"],
        seed=7,
        temperature=0.3,
        max_tokens=12,
        response_format=fmt,
        extra_body={"custom_field": {"a": 1}, "top_k": 20},
        extra_headers={"X-Conversation-Id": "conv-42", "X-Autotune-Profile": "fast"},
    )
    request = recorder.requests[-1]
    assert request.dialect == "openai"
    assert request.stop == ["END", "STOP"] and request.seed == 7 and request.temperature == 0.3
    assert request.max_tokens == 12 and request.top_k == 20
    assert request.response_format == fmt
    assert request.extra == {"custom_field": {"a": 1}}
    assert request.conversation_id == "conv-42"
    assert live.fake.plans[-1].profile == "fast"


def test_tools_and_tool_calls(live_factory: Any) -> None:
    recorder = Recorder()
    live = live_factory(recorder, backend=ToolBackend)
    tools: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    reply = sdk(live).chat.completions.create(model="llama3.2:1b", messages=MSGS, tools=tools, tool_choice="auto")
    call = reply.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather" and call.function.arguments == '{"city": "Paris"}'
    assert reply.choices[0].finish_reason == "tool_calls"
    assert recorder.requests[-1].tools == tools and recorder.requests[-1].tool_choice == "auto"
    # streamed tool calls arrive as deltas with an index
    chunks = list(sdk(live).chat.completions.create(model="llama3.2:1b", messages=MSGS, tools=tools, stream=True))
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas and deltas[0].index == 0 and deltas[0].function.name == "get_weather"  # type: ignore[union-attr]
    # a follow-up turn with the tool result is accepted and normalised
    history: Any = [
        *MSGS,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    sdk(live).chat.completions.create(model="llama3.2:1b", messages=history)
    last = recorder.requests[-1].messages
    assert last[1].tool_calls[0].name == "get_weather" and last[2].tool_call_id == "call_1"


def test_legacy_completions(live_factory: Any) -> None:
    recorder = Recorder()
    live = live_factory(recorder)
    reply = sdk(live).completions.create(model="llama3.2:1b", prompt="def f(", max_tokens=8, suffix="\n")
    assert reply.choices[0].text == REPLY
    assert recorder.requests[-1].kind == "completion" and recorder.requests[-1].prompt == "def f("
    assert recorder.requests[-1].extra == {"suffix": "\n"}
    text = "".join(
        c.choices[0].text
        for c in sdk(live).completions.create(model="llama3.2:1b", prompt="x", stream=True)
        if c.choices
    )
    assert text == REPLY


def test_embeddings_float_and_base64(live: LiveServer) -> None:
    client = sdk(live)
    default = client.embeddings.create(model="llama3.2:1b", input=["hello world", "bye"])  # SDK asks for base64
    floats = client.embeddings.create(model="llama3.2:1b", input="hello world", encoding_format="float")
    assert len(default.data) == 2 and len(default.data[0].embedding) == 32
    assert default.data[0].embedding == pytest.approx(floats.data[0].embedding, rel=1e-6)


def test_models_list_and_retrieve(live: LiveServer) -> None:
    client = sdk(live)
    ids = {m.id for m in client.models.list()}
    assert ids == {"llama3.2:1b", "gemma3:270m"}
    assert client.models.retrieve("gemma3:270m").owned_by == "fake"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_errors_are_typed(live: LiveServer) -> None:
    client = sdk(live)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="no-such-model", messages=MSGS)
    body: Any = missing.value.body
    assert body["type"] == "model_not_found" and "llama3.2:1b" in body["message"]
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="llama3.2:1b", messages=MSGS, temperature="hot")  # type: ignore[arg-type]
    assert bad.value.body["param"] == "temperature"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="llama3.2:1b", messages=MSGS, extra_headers={"X-Autotune-Profile": "x"})
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="llama3.2:1b", messages=MSGS, n=2)
    live.wait_idle()
