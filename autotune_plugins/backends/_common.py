"""Helpers shared by the HTTP backends (not a plugin): error mapping, SSE parsing, OpenAI wire shapes.

Kept beside the backends so each plugin stays importable on its own and imports only autotune_core.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

from autotune_core import jsonio
from autotune_core.backend import EmbeddingResult
from autotune_core.errors import UpstreamError
from autotune_core.messages import ChatRequest, Message, ToolCall, Usage
from autotune_core.plan import Plan

from ._http import StreamingResponse, UpstreamClient

#: sampling fields both OpenAI-style servers and Ollama understand under the same names
SAMPLING_FIELDS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "repeat_penalty",
)


def make_client(
    base_url: str, timeout: float, headers: dict[str, str] | None = None, label: str = "upstream"
) -> UpstreamClient:
    """One pooled client per backend instance: keep-alive connections, bounded timeouts everywhere."""
    return UpstreamClient(base_url, timeout, headers, label=label)


def error_text(body: bytes | str) -> str:
    """The server's own error message from ``{"error": "..."}`` or ``{"error": {"message": ...}}``."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip()[:500]
    if isinstance(data, dict):
        err = data.get("error", data.get("message"))
        if isinstance(err, dict):
            return str(err.get("message") or err)[:500]
        if err is not None:
            return str(err)[:500]
    return text.strip()[:500]


def json_object(payload: bytes | str, label: str) -> dict[str, Any]:
    """A JSON object from the model server; anything else is the server's failure (502), not ours (500)."""
    try:
        data = jsonio.loads(payload, constants=True)
    except (ValueError, RecursionError) as exc:
        raise UpstreamError(f"{label} sent something that is not JSON: {payload[:200]!r}") from exc
    if not isinstance(data, dict):
        raise UpstreamError(f"{label} sent JSON that is not an object: {payload[:200]!r}")
    return data


@contextlib.contextmanager
def readable_answer(label: str) -> Iterator[None]:
    """Reading an answer whose fields have unexpected types (a string where an object belongs, ...) is the
    server's failure: 502 ``upstream_error`` naming the problem, never a 500 from deep in the translation."""
    try:
        yield
    except (AttributeError, TypeError, KeyError, IndexError, ValueError) as exc:
        raise UpstreamError(f"{label} sent an answer autotune cannot read: {type(exc).__name__}: {exc}"[:400]) from exc


def checked_embeddings(result: EmbeddingResult, inputs: int, label: str) -> EmbeddingResult:
    """One vector per input, or the answer is wrong (never hand a client fewer vectors than it sent texts)."""
    if len(result.vectors) != inputs:
        raise UpstreamError(f"{label} sent {len(result.vectors)} embeddings for {inputs} inputs")
    return result


def status_error(status: int, message: str, label: str) -> UpstreamError:
    """An HTTP error answer: client errors keep their status, server errors become 502."""
    if 400 <= status < 500 and status != 404:
        return UpstreamError(
            f"{label}: {message}", status=status, type="invalid_request_error", code="rejected_by_model_server"
        )
    return UpstreamError(f"{label} answered HTTP {status}: {message}")


async def sse_data(response: StreamingResponse) -> AsyncIterator[str]:
    """The ``data:`` payloads of a server-sent-events body, joined per event; ``[DONE]`` included."""
    buffer: list[str] = []
    async for line in response.aiter_lines():
        if not line.strip():
            if buffer:
                yield "\n".join(buffer)
                buffer = []
            continue
        if line.startswith(":"):
            continue
        if line.startswith("data:"):
            buffer.append(line[5:].lstrip(" "))
    if buffer:
        yield "\n".join(buffer)


def strip_data_url(image: str) -> str:
    """Ollama wants bare base64; OpenAI clients send ``data:image/png;base64,...``."""
    if image.startswith("data:") and "," in image:
        return image.split(",", 1)[1]
    return image


def effective_messages(request: ChatRequest, plan: Plan) -> list[Message]:
    """The plan's messages (after compression/recall) when it has them, else the request's."""
    return plan.messages if plan.messages else request.messages


def sampling(request: ChatRequest, plan: Plan) -> dict[str, Any]:
    """What the client sent, exactly; ``plan.sampling`` (empty unless the opt-in sampling-presets plugin runs)
    only fills fields the client left out. Nothing here by default: the model's own defaults apply."""
    merged = {key: value for key, value in plan.sampling.items() if key in SAMPLING_FIELDS and value is not None}
    merged.update(request.sampling())
    return merged


def max_tokens(request: ChatRequest, plan: Plan) -> int | None:
    """The plan's output budget (the client's, unless a guard had to cap it), else the request's."""
    return plan.max_tokens if plan.max_tokens is not None else request.max_tokens


# -- OpenAI wire ------------------------------------------------------------------------------------------


def openai_message(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role}
    if message.images:
        parts: list[dict[str, Any]] = [{"type": "text", "text": message.content}] if message.content else []
        for image in message.images:
            url = image if image.startswith(("data:", "http://", "https://")) else f"data:image/png;base64,{image}"
            parts.append({"type": "image_url", "image_url": {"url": url}})
        out["content"] = parts
    else:
        out["content"] = message.content
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id or f"call_{index}",
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments or "{}"},
            }
            for index, call in enumerate(message.tool_calls)
        ]
        if not message.content:
            out["content"] = None
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    if message.name and message.role != "tool":
        out["name"] = message.name
    return out


def openai_body(request: ChatRequest, plan: Plan, *, stream: bool) -> dict[str, Any]:
    """A faithful OpenAI chat/completions body; unknown client fields from ``request.extra`` pass through."""
    body: dict[str, Any] = dict(request.extra)
    body["model"] = request.model
    if request.kind == "completion":
        body["prompt"] = request.prompt or ""
    else:
        body["messages"] = [openai_message(m) for m in effective_messages(request, plan)]
    body["stream"] = stream
    if stream:
        options = dict(body.get("stream_options") or {})
        options["include_usage"] = True  # we always need usage for post_response; stripped if the client did not ask
        body["stream_options"] = options
    limit = max_tokens(request, plan)
    if limit is not None:
        body["max_tokens"] = limit
    body.update(sampling(request, plan))
    if request.stop:
        body["stop"] = list(request.stop)
    if request.tools:
        body["tools"] = request.tools
    if request.tool_choice is not None:
        body["tool_choice"] = request.tool_choice
    if request.response_format is not None:
        body["response_format"] = request.response_format
    return body


def openai_usage(data: dict[str, Any] | None) -> Usage | None:
    if not isinstance(data, dict):
        return None
    details = data.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return Usage(
        prompt_tokens=int(data.get("prompt_tokens") or 0),
        completion_tokens=int(data.get("completion_tokens") or 0),
        cached_tokens=int(cached) if cached is not None else None,
    )


def openai_tool_calls(raw: Any) -> list[ToolCall]:
    calls = []
    for index, item in enumerate(raw or []):
        function = item.get("function") or {}
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments or {})
        calls.append(
            ToolCall(
                id=item.get("id"),
                name=str(function.get("name") or ""),
                arguments=arguments,
                index=item.get("index", index),
            )
        )
    return calls


class ToolCallAssembler:
    """Joins streamed ``tool_calls`` deltas (first delta has id and name, later ones argument pieces)."""

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, Any]] = {}

    def add(self, deltas: list[dict[str, Any]]) -> None:
        for position, delta in enumerate(deltas):
            index = int(delta.get("index", position))
            slot = self._calls.setdefault(index, {"id": None, "name": "", "arguments": ""})
            if delta.get("id"):
                slot["id"] = delta["id"]
            function = delta.get("function") or {}
            if function.get("name"):
                slot["name"] += function["name"]
            arguments = function.get("arguments")
            if arguments:
                slot["arguments"] += arguments if isinstance(arguments, str) else json.dumps(arguments)

    def calls(self) -> list[ToolCall]:
        return [
            ToolCall(id=slot["id"], name=slot["name"], arguments=slot["arguments"] or "{}", index=index)
            for index, slot in sorted(self._calls.items())
        ]
