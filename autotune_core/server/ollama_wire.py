"""Ollama wire format (``/api/chat``, ``/api/generate``, ``/api/embed``) ↔ ChatRequest / ChatResult / StreamChunk.

Client ``options`` are kept whole in ``ChatRequest.options`` (so ``num_ctx`` and friends reach the
plugins and the backend) and the sampling ones are also lifted into the typed fields; ``keep_alive``
is preserved as sent. Streaming is on by default, as in Ollama.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..messages import ChatRequest, ChatResult, StreamChunk, Timings, ToolCall, Usage
from .errors import SchemaError, dumps, validate, with_warnings

_ALLOW = ConfigDict(extra="allow")


class WireFunction(BaseModel):
    model_config = _ALLOW

    name: str = ""
    arguments: dict[str, Any] | str = Field(default_factory=dict)


class WireToolCall(BaseModel):
    model_config = _ALLOW

    function: WireFunction


class WireMessage(BaseModel):
    model_config = _ALLOW

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | None = ""
    images: list[str] | None = None
    tool_calls: list[WireToolCall] | None = None
    tool_name: str | None = None
    thinking: str | None = None


class Options(BaseModel):
    """Types of the options we read; the rest pass through untouched."""

    model_config = _ALLOW

    num_ctx: int | None = Field(default=None, ge=1)
    num_predict: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    repeat_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    stop: list[str] | str | None = None


class _Base(BaseModel):
    model_config = _ALLOW

    model: str = Field(min_length=1)
    stream: bool = True
    options: Options | None = None
    keep_alive: str | float | None = None
    format: str | dict[str, Any] | None = None
    think: bool | Literal["low", "medium", "high"] | None = None


class ChatBody(_Base):
    messages: list[WireMessage] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None


class GenerateBody(_Base):
    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool = False
    images: list[str] | None = None


class EmbedBody(BaseModel):
    model_config = _ALLOW

    model: str = Field(min_length=1)
    input: str | list[str] = ""
    truncate: bool | None = None
    keep_alive: str | float | None = None
    dimensions: int | None = Field(default=None, ge=1)


class LegacyEmbeddingsBody(BaseModel):
    model_config = _ALLOW

    model: str = Field(min_length=1)
    prompt: str = ""
    keep_alive: str | float | None = None


class ModelNameBody(BaseModel):
    model_config = _ALLOW

    model: str | None = None
    name: str | None = None

    def target(self) -> str:
        chosen = self.model or self.name
        if not chosen:
            raise SchemaError("model: field required", param="model")
        return chosen


def _format(value: str | dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None or value == "":
        return None
    if value == "json":
        return {"type": "json_object"}
    if isinstance(value, dict):
        return {"type": "json_schema", "json_schema": {"name": "schema", "schema": value}}
    raise SchemaError('format: expected "json" or a JSON schema object', param="format")


def _message(wire: WireMessage) -> dict[str, Any]:
    """A Message's fields (validated with the ChatRequest)."""
    calls = [
        {
            "id": None,
            "index": None,
            "name": call.function.name,
            "arguments": call.function.arguments
            if isinstance(call.function.arguments, str)
            else dumps(call.function.arguments).decode(),
        }
        for call in wire.tool_calls or []
    ]
    return {
        "role": wire.role,
        "content": wire.content or "",
        "images": list(wire.images or []),
        "tool_calls": calls,
        "tool_call_id": None,
        "name": wire.tool_name,
        "thinking": wire.thinking,
    }


_NO_OPTIONS = Options()  # read-only: the answer for a request without "options" (most of them)


def _fields(body: _Base) -> dict[str, Any]:
    options = body.options
    if options is None:
        options, raw_options = _NO_OPTIONS, {}
    else:
        raw_options = options.model_dump(exclude_none=True)
    stop = options.stop
    return {
        "model": body.model,
        "stream": body.stream,
        "stream_include_usage": False,
        "max_tokens": options.num_predict if options.num_predict is not None and options.num_predict >= 0 else None,
        "temperature": options.temperature,
        "top_p": options.top_p,
        "top_k": options.top_k,
        "min_p": options.min_p,
        "seed": options.seed,
        "stop": [stop] if isinstance(stop, str) else list(stop or []),
        "presence_penalty": options.presence_penalty,
        "frequency_penalty": options.frequency_penalty,
        "repeat_penalty": options.repeat_penalty,
        "keep_alive": body.keep_alive,
        "options": raw_options,
        "response_format": _format(body.format),
        "think": body.think,
        "dialect": "ollama",
        "profile": None,
        "conversation_id": None,
        "tools": [],
        "tool_choice": None,
        "raw": False,
        "prompt": None,
        "messages": [],
    }


def chat_request(data: dict[str, Any]) -> ChatRequest:
    body: ChatBody = validate(ChatBody, data)
    fields = _fields(body)
    fields.update(
        kind="chat",
        messages=[_message(m) for m in body.messages],
        tools=body.tools or [],
        extra=dict(body.model_extra or {}),
    )
    return validate(ChatRequest, fields)


def generate_request(data: dict[str, Any]) -> ChatRequest:
    body: GenerateBody = validate(GenerateBody, data)
    fields = _fields(body)
    extra = dict(body.model_extra or {})
    for key in ("suffix", "system", "template", "context", "images"):
        value = getattr(body, key)
        if value is not None:
            extra[key] = value
    fields.update(kind="completion", prompt=body.prompt, raw=body.raw, extra=extra)
    return validate(ChatRequest, fields)


# -- responses ---------------------------------------------------------------------------------------------


_SECOND: list[Any] = [None, ""]  # the current second and its formatted prefix


def now_iso() -> str:
    """``created_at`` as Ollama writes it (microseconds, ``Z``). Every response and stream chunk carries one,
    so the date part is formatted once a second."""
    now = time.time()
    second = int(now)
    if _SECOND[0] != second:
        _SECOND[:] = [second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")]
    return f"{_SECOND[1]}.{int((now - second) * 1_000_000):06d}Z"


def _ns(ms: float | None) -> int:
    return int((ms or 0.0) * 1_000_000)


def timing_fields(usage: Usage, timings: Timings, total_ms: float | None = None) -> dict[str, Any]:
    return {
        "total_duration": _ns(timings.total_ms if timings.total_ms is not None else total_ms),
        "load_duration": _ns(timings.load_ms),
        "prompt_eval_count": usage.prompt_tokens,
        "prompt_eval_duration": _ns(timings.prompt_ms),
        "eval_count": usage.completion_tokens,
        "eval_duration": _ns(timings.decode_ms),
    }


def _tool_calls(calls: list[ToolCall]) -> list[dict[str, Any]]:
    return [{"function": {"name": call.name, "arguments": call.arguments_dict()}} for call in calls]


def _done_reason(finish: str | None) -> str:
    # Ollama reports "stop" for tool calls too; OpenAI's "length" is Ollama's "length"
    return "stop" if finish in (None, "tool_calls") else finish


def chat_response(result: ChatResult, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": result.content}
    if result.thinking:
        message["thinking"] = result.thinking
    if result.tool_calls:
        message["tool_calls"] = _tool_calls(result.tool_calls)
    out = {
        "model": model,
        "created_at": now_iso(),
        "message": message,
        "done": True,
        "done_reason": _done_reason(result.finish_reason),
        **timing_fields(result.usage, result.timings),
    }
    return with_warnings(out, result.warnings)


def generate_response(result: ChatResult, model: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "model": model,
        "created_at": now_iso(),
        "response": result.content,
        "done": True,
        "done_reason": _done_reason(result.finish_reason),
    }
    if result.thinking:
        out["thinking"] = result.thinking
    out.update(timing_fields(result.usage, result.timings))
    return with_warnings(out, result.warnings)


class NdjsonEncoder:
    """StreamChunk → Ollama NDJSON lines; content-only chunks take a pre-encoded fast path."""

    def __init__(self, model: str, *, generate: bool) -> None:
        self.model = model
        self.generate = generate
        self.started = time.perf_counter()
        head = dumps({"model": model})[:-1]
        self._head = head + b',"created_at":"'
        self._mid = b'","response":' if generate else b'","message":{"role":"assistant","content":'
        self._tail = b',"done":false}\n' if generate else b'},"done":false}\n'

    def start(self) -> bytes:
        return b""

    def chunk(self, chunk: StreamChunk) -> bytes:
        if not chunk.done and not chunk.tool_calls and chunk.thinking is None:
            if not chunk.content:
                return b""
            return self._head + now_iso().encode() + self._mid + dumps(chunk.content) + self._tail
        out: dict[str, Any] = {"model": self.model, "created_at": now_iso()}
        if self.generate:
            out["response"] = chunk.content
            if chunk.thinking:
                out["thinking"] = chunk.thinking
        else:
            message: dict[str, Any] = {"role": "assistant", "content": chunk.content}
            if chunk.thinking:
                message["thinking"] = chunk.thinking
            if chunk.tool_calls:
                message["tool_calls"] = _tool_calls(chunk.tool_calls)
            out["message"] = message
        out["done"] = chunk.done
        if chunk.done:
            out["done_reason"] = _done_reason(chunk.finish_reason)
            out.update(
                timing_fields(
                    chunk.usage or Usage(), chunk.timings or Timings(), (time.perf_counter() - self.started) * 1000
                )
            )
            with_warnings(out, chunk.warnings)
        return dumps(out) + b"\n"

    def error(self, body: dict[str, Any]) -> bytes:
        return dumps(body) + b"\n"
