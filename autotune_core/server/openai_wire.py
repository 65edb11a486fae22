"""OpenAI wire format ↔ ChatRequest / ChatResult / StreamChunk.

The body is validated by these wire models (so errors name the client's own field names); the ChatRequest
is then built from the already-validated values, messages as plain dicts, in one pass of pydantic-core
(faster than ``model_construct``'s Python loop: docs/benchmarks.md). Unknown top-level fields are kept in
``ChatRequest.extra`` and passed on.
"""

from __future__ import annotations

import base64
import random
import struct
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..messages import ChatRequest, ChatResult, StreamChunk, ToolCall, Usage
from .errors import SchemaError, Unsupported, dumps, validate, with_warnings

_ALLOW = ConfigDict(extra="allow")


class ContentPart(BaseModel):
    model_config = _ALLOW

    type: str
    text: str | None = None
    image_url: dict[str, Any] | str | None = None


class FunctionCall(BaseModel):
    model_config = _ALLOW

    name: str = ""
    arguments: str | dict[str, Any] = "{}"


class WireToolCall(BaseModel):
    model_config = _ALLOW

    id: str | None = None
    type: str = "function"
    function: FunctionCall
    index: int | None = None


class WireMessage(BaseModel):
    model_config = _ALLOW

    role: Literal["system", "user", "assistant", "tool", "developer", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[WireToolCall] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None


class StreamOptions(BaseModel):
    model_config = _ALLOW

    include_usage: bool = False


class _Sampling(BaseModel):
    """Fields shared by chat and legacy completions."""

    model_config = _ALLOW

    model: str = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    repeat_penalty: float | None = None
    n: int | None = Field(default=None, ge=1)
    keep_alive: str | float | None = None
    #: Ollama-style ``options`` (``extra_body={"options": {"num_ctx": 8192}}``), an autotune extension
    options: dict[str, Any] | None = None
    profile: str | None = None
    conversation_id: str | None = None


class ChatBody(_Sampling):
    messages: list[WireMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=0)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    reasoning_effort: str | None = None


class CompletionBody(_Sampling):
    prompt: str | list[str]


class EmbeddingsBody(BaseModel):
    model_config = _ALLOW

    model: str = Field(min_length=1)
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)


_SAMPLING_FIELDS = frozenset(_Sampling.model_fields)
#: knob names a client may send at the top level of an OpenAI body (non-standard, read as options)
_TOP_LEVEL_OPTIONS = ("num_ctx", "num_batch", "num_keep", "num_thread", "kv_type", "kv_cache_type")


def _text(content: str | list[ContentPart] | None) -> tuple[str, list[str]]:
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    images: list[str] = []
    for part in content:
        if part.type in ("text", "input_text") and part.text is not None:
            texts.append(part.text)
        elif part.type == "image_url" and part.image_url is not None:
            url = part.image_url if isinstance(part.image_url, str) else part.image_url.get("url")
            if isinstance(url, str):
                images.append(url)
    return "\n".join(texts), images


def _message(wire: WireMessage) -> dict[str, Any]:
    """A Message's fields (validated with the ChatRequest)."""
    content, images = _text(wire.content)
    calls = [
        {
            "id": call.id,
            "name": call.function.name,
            "index": call.index,
            "arguments": call.function.arguments
            if isinstance(call.function.arguments, str)
            else dumps(call.function.arguments).decode(),
        }
        for call in wire.tool_calls or []
    ]
    return {
        "role": "tool" if wire.role == "function" else wire.role,
        "content": content,
        "images": images,
        "tool_calls": calls,
        "tool_call_id": wire.tool_call_id,
        "name": wire.name,
        "thinking": wire.reasoning_content,
    }


def _stops(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


def _common(body: _Sampling, extra_skip: frozenset[str]) -> dict[str, Any]:
    if body.n is not None and body.n > 1:
        raise Unsupported("n > 1 is not supported by the autotune proxy; send one request per choice")
    extra = {key: value for key, value in (body.model_extra or {}).items() if key not in extra_skip}
    options = dict(body.options or {})
    for name in _TOP_LEVEL_OPTIONS:  # extra_body={"num_ctx": ...} as LiteLLM-style clients send it
        if name in extra and name not in options:
            options[name] = extra[name]
    if body.options is not None:
        extra["options"] = body.options  # forwarded as sent to OpenAI-compatible servers
    return {
        "model": body.model,
        "stream": body.stream,
        "stream_include_usage": bool(body.stream and body.stream_options and body.stream_options.include_usage),
        "temperature": body.temperature,
        "top_p": body.top_p,
        "top_k": body.top_k,
        "min_p": body.min_p,
        "seed": body.seed,
        "stop": _stops(body.stop),
        "presence_penalty": body.presence_penalty,
        "frequency_penalty": body.frequency_penalty,
        "repeat_penalty": body.repeat_penalty,
        "keep_alive": body.keep_alive,
        "profile": body.profile,
        "conversation_id": body.conversation_id,
        "dialect": "openai",
        "extra": extra,
        "options": options,
        "tools": [],
        "tool_choice": None,
        "response_format": None,
        "think": None,
        "raw": False,
        "prompt": None,
        "messages": [],
    }


def chat_request(data: dict[str, Any]) -> ChatRequest:
    """``/v1/chat/completions`` body → ChatRequest (validated once)."""
    body: ChatBody = validate(ChatBody, data)
    fields = _common(body, frozenset())
    limit = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    fields.update(
        kind="chat",
        messages=[_message(m) for m in body.messages],
        max_tokens=limit,
        tools=body.tools or [],
        tool_choice=body.tool_choice,
        response_format=body.response_format,
    )
    if body.reasoning_effort is not None:
        fields["extra"]["reasoning_effort"] = body.reasoning_effort
    return validate(ChatRequest, fields)


def completion_request(data: dict[str, Any]) -> ChatRequest:
    """``/v1/completions`` (legacy text completion) → ChatRequest(kind="completion")."""
    body: CompletionBody = validate(CompletionBody, data)
    prompt = body.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise SchemaError("prompt: only a single prompt per request is supported", param="prompt")
        prompt = prompt[0]
    fields = _common(body, frozenset())
    fields.update(kind="completion", prompt=prompt, max_tokens=body.max_tokens)
    return validate(ChatRequest, fields)


def embeddings_request(data: dict[str, Any]) -> EmbeddingsBody:
    body: EmbeddingsBody = validate(EmbeddingsBody, data)
    return body


# -- responses ---------------------------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    """A response id (``chatcmpl-…``): unique, not secret, so the cheap generator (``secrets`` asks the kernel
    on every call: a system call per response)."""
    return f"{prefix}-{random.getrandbits(96):024x}"


def usage_dict(usage: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.cached_tokens is not None:
        out["prompt_tokens_details"] = {"cached_tokens": usage.cached_tokens}
    return out


def _tool_calls(calls: list[ToolCall], *, with_index: bool) -> list[dict[str, Any]]:
    out = []
    for position, call in enumerate(calls):
        item: dict[str, Any] = {
            "id": call.id or f"call_{random.getrandbits(48):012x}",
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments or "{}"},
        }
        if with_index:
            item["index"] = call.index if call.index is not None else position
        out.append(item)
    return out


def chat_response(result: ChatResult, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": result.content}
    if result.tool_calls:
        message["tool_calls"] = _tool_calls(result.tool_calls, with_index=False)
        if not result.content:
            message["content"] = None
    if result.thinking:
        message["reasoning_content"] = result.thinking
    return with_warnings(
        {
            "id": new_id("chatcmpl"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": result.finish_reason or "stop"}
            ],
            "usage": usage_dict(result.usage),
        },
        result.warnings,
    )


def completion_response(result: ChatResult, model: str) -> dict[str, Any]:
    return with_warnings(
        {
            "id": new_id("cmpl"),
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {"index": 0, "text": result.content, "logprobs": None, "finish_reason": result.finish_reason or "stop"}
            ],
            "usage": usage_dict(result.usage),
        },
        result.warnings,
    )


def embeddings_response(vectors: list[list[float]], model: str, prompt_tokens: int, encoding: str) -> dict[str, Any]:
    data = []
    for index, vector in enumerate(vectors):
        value: Any = vector
        if encoding == "base64":
            value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
        data.append({"object": "embedding", "index": index, "embedding": value})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


class ChatStreamEncoder:
    """StreamChunk → SSE ``chat.completion.chunk`` frames; content-only chunks take a pre-encoded fast path."""

    def __init__(self, model: str, include_usage: bool, *, completion: bool = False) -> None:
        self.id = new_id("cmpl" if completion else "chatcmpl")
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage
        self.completion = completion
        self.object = "text_completion" if completion else "chat.completion.chunk"
        head = dumps({"id": self.id, "object": self.object, "created": self.created, "model": self.model})[:-1]
        # with include_usage OpenAI sends "usage": null on every chunk but the last (SDKs type it Optional)
        tail = b',"usage":null}\n\n' if include_usage else b"}\n\n"
        if completion:
            self._pre = b"data: " + head + b',"choices":[{"index":0,"text":'
            self._post = b',"logprobs":null,"finish_reason":null}]' + tail
        else:
            self._pre = b"data: " + head + b',"choices":[{"index":0,"delta":{"content":'
            self._post = b'},"logprobs":null,"finish_reason":null}]' + tail
        self._tool_index = 0

    def start(self) -> bytes:
        if self.completion:
            return b""
        return self._frame({"role": "assistant", "content": ""}, None)

    def _frame(
        self, delta: dict[str, Any], finish: str | None, usage: Usage | None = None, warnings: list[str] | None = None
    ) -> bytes:
        choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": finish}
        if self.completion:
            choice["text"] = delta.get("content", "")
        else:
            choice["delta"] = delta
        data: dict[str, Any] = {
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        }
        if usage is not None:
            data["usage"] = usage_dict(usage)
        elif self.include_usage:
            data["usage"] = None
        return b"data: " + dumps(with_warnings(data, warnings or [])) + b"\n\n"

    def chunk(self, chunk: StreamChunk) -> bytes:
        if not chunk.tool_calls and chunk.thinking is None and not chunk.done:
            if not chunk.content:
                return b""
            return self._pre + dumps(chunk.content) + self._post
        out = b""
        delta: dict[str, Any] = {}
        if chunk.content:
            delta["content"] = chunk.content
        if chunk.thinking:
            delta["reasoning_content"] = chunk.thinking
        if chunk.tool_calls and not self.completion:
            calls = _tool_calls(chunk.tool_calls, with_index=True)
            for call, original in zip(calls, chunk.tool_calls, strict=True):
                if original.index is None:
                    call["index"] = self._tool_index
                    self._tool_index += 1
            delta["tool_calls"] = calls
        if delta:
            out += self._frame(delta, None)
        if chunk.done:
            out += self._frame({}, chunk.finish_reason or "stop", warnings=chunk.warnings)
            if self.include_usage:
                data = {
                    "id": self.id,
                    "object": self.object,
                    "created": self.created,
                    "model": self.model,
                    "choices": [],
                    "usage": usage_dict(chunk.usage or Usage()),
                }
                out += b"data: " + dumps(data) + b"\n\n"
        return out

    def error(self, body: dict[str, Any]) -> bytes:
        return b"data: " + dumps(body) + b"\n\n"
