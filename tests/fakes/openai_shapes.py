"""OpenAI response shapes (JSON bodies and SSE events), shared by the OpenAI-style fakes and the fake
Ollama's ``/v1`` layer, plus :func:`parse_sse` for tests."""

from __future__ import annotations

import base64
import itertools
import json
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from .tokens import Output, pieces, token_id
from .wire import dumps

__all__ = [
    "OpenAIResult",
    "chat_completion_body",
    "chat_completion_events",
    "completion_body",
    "completion_events",
    "embeddings_body",
    "parse_sse",
    "sse_events",
]

_ids = itertools.count(1)


def _new_id(prefix: str) -> str:
    return f"{prefix}-{next(_ids):012x}"


@dataclass
class OpenAIResult:
    model: str
    output: Output
    prompt_tokens: int
    cached_tokens: int | None  # None: no prompt_tokens_details in usage
    system_fingerprint: str | None = None
    timings: dict[str, Any] | None = None
    id: str = field(default_factory=lambda: _new_id("chatcmpl"))
    created: int = field(default_factory=lambda: int(time.time()))

    def usage(self) -> dict[str, Any]:
        n = len(self.output.pieces)
        usage: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": n,
            "total_tokens": self.prompt_tokens + n,
        }
        if self.cached_tokens is not None:
            usage["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        return usage


def _openai_tool_calls(calls: list[dict[str, Any]], id_seed: str) -> list[dict[str, Any]]:
    return [
        {
            "id": f"call_{token_id(id_seed + c['name'] + str(i)):08x}",
            "type": "function",
            "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])},
        }
        for i, c in enumerate(calls)
    ]


def _base(result: OpenAIResult, obj: str) -> dict[str, Any]:
    base: dict[str, Any] = {"id": result.id, "object": obj, "created": result.created, "model": result.model}
    if result.system_fingerprint:
        base["system_fingerprint"] = result.system_fingerprint
    return base


def chat_completion_body(result: OpenAIResult) -> dict[str, Any]:
    out = result.output
    message: dict[str, Any] = {"role": "assistant", "content": out.text}
    if out.tool_calls:
        message["content"] = out.text or None
        message["tool_calls"] = _openai_tool_calls(out.tool_calls, result.id)
    body = _base(result, "chat.completion")
    body["choices"] = [{"index": 0, "message": message, "logprobs": None, "finish_reason": out.finish_reason}]
    body["usage"] = result.usage()
    if result.timings is not None:
        body["timings"] = result.timings
    return body


def sse_events(objs: list[dict[str, Any]]) -> list[bytes]:
    return [b"data: " + dumps(o) + b"\n\n" for o in objs] + [b"data: [DONE]\n\n"]


def chat_completion_events(result: OpenAIResult, chunks: list[str], include_usage: bool) -> list[bytes]:
    """SSE payloads: role chunk, content chunks (or tool-call deltas), the finish chunk, the usage chunk when
    ``include_usage``, then ``[DONE]``."""
    base = _base(result, "chat.completion.chunk")

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    objs = [chunk({"role": "assistant", "content": ""})]
    objs.extend(chunk({"content": c}) for c in chunks)
    out = result.output
    if out.tool_calls:
        for i, call in enumerate(_openai_tool_calls(out.tool_calls, result.id)):
            fn = call["function"]
            head = {
                "index": i,
                "id": call["id"],
                "type": "function",
                "function": {"name": fn["name"], "arguments": ""},
            }
            objs.append(chunk({"tool_calls": [head]}))
            for part in pieces(fn["arguments"]) or [""]:
                objs.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": part}}]}))
    last = chunk({}, out.finish_reason)
    if result.timings is not None:
        last["timings"] = result.timings
    objs.append(last)
    if include_usage:
        usage_chunk: dict[str, Any] = {**base, "choices": [], "usage": result.usage()}
        if result.timings is not None:
            usage_chunk["timings"] = result.timings
        objs.append(usage_chunk)
    return sse_events(objs)


def completion_body(result: OpenAIResult) -> dict[str, Any]:
    body = _base(result, "text_completion")
    body["id"] = result.id.replace("chatcmpl", "cmpl")
    body["choices"] = [
        {
            "text": result.output.text,
            "index": 0,
            "logprobs": None,
            "finish_reason": result.output.finish_reason,
        }
    ]
    body["usage"] = result.usage()
    if result.timings is not None:
        body["timings"] = result.timings
    return body


def completion_events(result: OpenAIResult, chunks: list[str], include_usage: bool) -> list[bytes]:
    base = _base(result, "text_completion")
    base["id"] = result.id.replace("chatcmpl", "cmpl")

    def chunk(text: str, finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}]}

    objs = [chunk(c) for c in chunks]
    last = chunk("", result.output.finish_reason)
    if result.timings is not None:
        last["timings"] = result.timings
    objs.append(last)
    if include_usage:
        objs.append({**base, "choices": [], "usage": result.usage()})
    return sse_events(objs)


def embeddings_body(model: str, vectors: list[list[float]], n_tokens: int, encoding_format: Any) -> dict[str, Any]:
    data = []
    for i, vec in enumerate(vectors):
        emb: Any = vec
        if encoding_format == "base64":
            emb = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode("ascii")
        data.append({"object": "embedding", "index": i, "embedding": emb})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
    }


def parse_sse(raw: bytes | str) -> list[Any]:
    """Parse an SSE body into the JSON payloads plus the literal ``"[DONE]"`` (test helper)."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    out: list[Any] = []
    for block in text.split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: "):
                data = line[len("data: ") :]
                out.append(data if data == "[DONE]" else json.loads(data))
    return out
