"""One exchange as the server holds it, shared by both doors and by streams: the bounded JSON body and the request
headers we honour, what differs per door, the resolved request, planning through the Pipeline, the error and plan
headers of the reply, and what is recorded once the answer is done."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from .. import jsonio
from ..backend import Backend
from ..errors import AutotuneError, InvalidRequest
from ..messages import ChatRequest, ChatResult, StreamChunk
from ..pipeline import Prepared
from ..profiles import PROFILES
from .errors import Door, PayloadTooLarge, classify, dumps, error_body, error_headers
from .state import ServerState

log = logging.getLogger("autotune.server")

JSON_MEDIA = "application/json"


class JSONBytes(Response):
    media_type = JSON_MEDIA


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None, background: BackgroundTask | None = None
) -> Response:
    return JSONBytes(dumps(data), status_code=status, headers=headers, background=background)


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object, refusing more than ``limit`` bytes (by Content-Length and as streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise InvalidRequest("invalid Content-Length header", code="invalid_request") from None
        if size > limit:
            raise PayloadTooLarge(f"request body of {size} bytes exceeds the limit of {limit} bytes")
    parts: list[bytes] = []
    received = 0
    async for part in request.stream():
        received += len(part)
        if received > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        parts.append(part)
    body = b"".join(parts)
    if not body.strip():
        raise InvalidRequest("empty request body; expected a JSON object", code="invalid_json")
    try:
        data = jsonio.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"malformed JSON: {exc}", code="invalid_json") from None
    except RecursionError:
        raise InvalidRequest("malformed JSON: nested too deeply", code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest(f"expected a JSON object, got {type(data).__name__}", code="invalid_json")
    return data


def apply_headers(chat: ChatRequest, request: Request) -> ChatRequest:
    """``X-Autotune-Profile`` selects the profile; ``X-Conversation-Id`` names the conversation."""
    profile = request.headers.get("x-autotune-profile") or chat.profile
    if profile is not None:
        key = profile.strip().lower()
        if key not in PROFILES:
            raise InvalidRequest(
                f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}", code="invalid_profile"
            )
        chat.profile = key
    conversation = request.headers.get("x-conversation-id")
    if conversation:
        chat.conversation_id = conversation[:200]
    return chat


def plan_headers(prepared: Prepared, overhead_ms: float) -> dict[str, str]:
    headers = {
        "X-Autotune-Overhead-Ms": f"{overhead_ms:.3f}",
        "X-Autotune-Backend": prepared.backend.name,
        "X-Autotune-Profile": prepared.plan.profile,
        "Cache-Control": "no-store",
    }
    headers["X-Autotune-Plan"] = prepared.plan.compact_trace()
    if prepared.plan.warnings:  # a client value a safety guard lowered, or a request that will not run as asked
        headers["X-Autotune-Warning"] = prepared.plan.warning_header()
    return headers


def plan_comments(headers: dict[str, str]) -> bytes:
    """The plan headers as SSE comment lines, for a stream whose headers were sent before it was planned."""
    return (
        "".join(
            f": {name.lower()}: {value}\n" for name, value in headers.items() if name.startswith("X-Autotune-")
        ).encode()
        + b"\n"
    )


def count_error(state: ServerState, error: AutotuneError) -> None:
    """Errors by type, and queue refusals by reason (whether sent as a status or in-band in a stream)."""
    state.metrics.errors.inc({"type": error.type})
    if error.status == 429:
        state.metrics.queue_rejected.inc({"reason": error.code or "queue_full"})


def error_response(
    state: ServerState, door: Door, endpoint: str, exc: BaseException, prepared: Prepared | None = None
) -> Response:
    """The door's error shape; a request that failed after planning also carries its plan headers (what was
    asked of the model server is often why it failed)."""
    error = classify(exc)
    count_error(state, error)
    state.metrics.requests.inc({"door": door, "endpoint": endpoint, "status": str(error.status)})
    headers = error_headers(error)
    if prepared is not None:
        headers = {**plan_headers(prepared, prepared.planning_ms), **headers}
    return json_response(error_body(door, error), error.status, headers)


def ok(state: ServerState, door: Door, endpoint: str, data: Any) -> Response:
    state.metrics.requests.inc({"door": door, "endpoint": endpoint, "status": "200"})
    return json_response(data)


# -- the exchange ------------------------------------------------------------------------------------------


class Encoder(Protocol):
    def start(self) -> bytes: ...

    def chunk(self, chunk: StreamChunk) -> bytes: ...

    def error(self, body: dict[str, Any]) -> bytes: ...


@dataclass(frozen=True)
class Dialect:
    """What differs between the doors for one endpoint."""

    door: Door
    endpoint: str
    parse: Callable[[dict[str, Any]], ChatRequest]
    respond: Callable[[ChatResult, str], dict[str, Any]]
    encoder: Callable[[ChatRequest], Encoder]

    @property
    def sse(self) -> bool:
        return self.door == "openai"


@dataclass
class Resolved:
    """A validated request and the backend that will serve it (resolved before queueing: 404/502 at once)."""

    chat: ChatRequest
    client_model: str
    backend: Backend
    upstream_model: str
    started: float
    #: time spent waiting on the backend outside the send itself (model info, token counting)
    upstream_s: float = 0.0
    waited_s: float = 0.0

    def overhead_s(self, upstream_s: float = 0.0) -> float:
        """autotune's own time so far: the handler's wall time minus the queue wait and every wait on the model
        server (``upstream_s``: the send itself, when it is over). The one definition of proxy overhead."""
        return time.perf_counter() - self.started - self.waited_s - self.upstream_s - upstream_s


async def plan(state: ServerState, resolved: Resolved) -> Prepared:
    """Plan through the Pipeline once the request holds a slot, so pre_request and post_response bracket the
    upstream call closely (and a 429 never leaves a pre_request without its post_response)."""
    state.latest_pressure()
    chat = resolved.chat
    if resolved.upstream_model != chat.model:
        chat = chat.model_copy(update={"model": resolved.upstream_model})
    prepared = await state.pipeline.plan(chat, resolved.backend)
    resolved.upstream_s += prepared.upstream_ms / 1000
    return prepared


def record_result(state: ServerState, prepared: Prepared, result: ChatResult) -> None:
    """Per-request metrics that need the plan after post_response (truncation flags, effective knobs)."""
    metrics, plan, model = state.metrics, prepared.plan, prepared.request.model
    if result.timings.ttft_ms is not None:
        metrics.ttft.observe(result.timings.ttft_ms / 1000)
    rate = result.timings.tokens_per_second(result.usage.completion_tokens)
    if rate is not None:
        metrics.tokens_per_s.observe(rate)
    metrics.tokens.inc({"kind": "prompt"}, result.usage.prompt_tokens)
    metrics.tokens.inc({"kind": "completion"}, result.usage.completion_tokens)
    if plan.num_ctx is not None:
        metrics.num_ctx.set(plan.num_ctx, {"model": model})
    if plan.kv_type is not None and metrics.kv_type.get({"model": model, "kv_type": plan.kv_type}) != 1:
        # one series per model: rebuilt only when the model's type changed, not on every request
        metrics.kv_type.replace(
            [
                (dict(labels), value)
                for labels, value in metrics.kv_type.values.items()
                if dict(labels).get("model") != model
            ]
            + [({"model": model, "kv_type": plan.kv_type}, 1)]
        )
    if plan.flags.get("truncated"):
        metrics.truncations.inc({"model": model})


async def finish(state: ServerState, prepared: Prepared, result: ChatResult) -> None:
    """post_response (through the Pipeline) after the answer went out, then the metrics that depend on it."""
    try:
        await state.pipeline.finish(prepared, result)
    except Exception as exc:  # post_response failures are the plugins'; never the client's
        log.warning("post_response failed: %s", exc)
    with contextlib.suppress(Exception):
        record_result(state, prepared, result)


def log_request(state: ServerState, chat: ChatRequest, door: Door, status: int, took_ms: float) -> None:
    if log.isEnabledFor(logging.INFO):
        log.info("%s %s model=%s status=%s %.1f ms", door, chat.kind, chat.model, status, took_ms)
        if state.config.log_prompts:
            log.info("prompt: %s", [m.content for m in chat.messages] or chat.prompt)
