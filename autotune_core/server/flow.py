"""The request path both doors share: read → validate → plan → queue → upstream → translate back.

Proxy overhead is measured honestly: ``X-Autotune-Overhead-Ms`` is the wall time of this handler
minus time spent waiting in the queue and waiting on the upstream server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from ..backend import Backend
from ..errors import AutotuneError, InvalidRequest, UpstreamTimeout
from ..messages import ChatRequest, ChatResult, StreamChunk
from ..pipeline import Prepared
from ..profiles import PROFILES
from .errors import Door, PayloadTooLarge, classify, dumps, error_body, error_headers
from .hangup import ClientDisconnected, unless_hung_up
from .queue import Ticket
from .sse import NDJSON_MEDIA, SSE_DONE, SSE_MEDIA, SSE_QUEUED, SSE_WAITING, StreamBody
from .state import ServerState

log = logging.getLogger("autotune.server")

JSON_MEDIA = "application/json"


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


class JSONBytes(Response):
    media_type = JSON_MEDIA


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None,
                  background: BackgroundTask | None = None) -> Response:
    return JSONBytes(dumps(data), status_code=status, headers=headers, background=background)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


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
        data = json.loads(body, parse_constant=_no_constant)
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
            raise InvalidRequest(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}",
                                 code="invalid_profile")
        chat.profile = key
    conversation = request.headers.get("x-conversation-id")
    if conversation:
        chat.conversation_id = conversation[:200]
    return chat


def count_error(state: ServerState, error: AutotuneError) -> None:
    """Errors by type, and queue refusals by reason (whether sent as a status or in-band in a stream)."""
    state.metrics.errors.inc({"type": error.type})
    if error.status == 429:
        state.metrics.queue_rejected.inc({"reason": error.code or "queue_full"})


def error_response(state: ServerState, door: Door, endpoint: str, exc: BaseException,
                   prepared: Prepared | None = None) -> Response:
    """The door's error shape; a request that failed after planning also carries its plan headers (what was
    asked of the model server is often why it failed)."""
    error = classify(exc)
    count_error(state, error)
    state.metrics.requests.inc({"door": door, "endpoint": endpoint, "status": str(error.status)})
    headers = error_headers(error)
    if prepared is not None:
        headers = {**plan_headers(prepared, prepared.planning_ms), **headers}
    return json_response(error_body(door, error), error.status, headers)


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


async def plan(state: ServerState, resolved: Resolved) -> Prepared:
    """Run the plugin hooks; called once the request holds a slot, so pre_request and post_response
    bracket the upstream call closely (and a 429 never leaves a pre_request without its post_response)."""
    state.latest_pressure()
    chat = resolved.chat
    if resolved.upstream_model != chat.model:
        chat = chat.model_copy(update={"model": resolved.upstream_model})
    info_started = time.perf_counter()
    info = await state.pipeline.model_info(resolved.backend, resolved.upstream_model)
    resolved.upstream_s += time.perf_counter() - info_started
    prepared = await state.pipeline.plan(chat, resolved.backend, info)
    resolved.upstream_s += prepared.tokenize_ms / 1000
    return prepared


async def abandon(state: ServerState, prepared: Prepared) -> None:
    """post_response for a planned request that failed before or at the upstream call (plugins restore state)."""
    failed = ChatResult(model=prepared.request.model, backend=prepared.backend.name, finish_reason="error")
    with contextlib.suppress(Exception):
        await asyncio.shield(state.pipeline.finish(prepared, failed))


def plan_headers(prepared: Prepared, overhead_ms: float) -> dict[str, str]:
    headers = {"X-Autotune-Overhead-Ms": f"{overhead_ms:.3f}", "X-Autotune-Backend": prepared.backend.name,
               "X-Autotune-Profile": prepared.plan.profile, "Cache-Control": "no-store"}
    headers["X-Autotune-Plan"] = prepared.plan.compact_trace()
    if prepared.plan.warnings:  # a client value a safety guard lowered, or a request that will not run as asked
        headers["X-Autotune-Warning"] = prepared.plan.warning_header()
    return headers


def plan_comments(headers: dict[str, str]) -> bytes:
    """The plan headers as SSE comment lines, for a stream whose headers were sent before it was planned."""
    return "".join(f": {name.lower()}: {value}\n" for name, value in headers.items()
                   if name.startswith("X-Autotune-")).encode() + b"\n"


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
    if plan.kv_type is not None:
        metrics.kv_type.replace([(labels, value) for labels, value in _series(metrics.kv_type.values)
                                 if labels.get("model") != model] + [({"model": model, "kv_type": plan.kv_type}, 1)])
    if plan.flags.get("truncated"):
        metrics.truncations.inc({"model": model})


def _series(values: dict[tuple[tuple[str, str], ...], float]) -> list[tuple[dict[str, str], float]]:
    return [(dict(key), value) for key, value in values.items()]


async def _finish(state: ServerState, prepared: Prepared, result: ChatResult) -> None:
    try:
        await state.pipeline.finish(prepared, result)
    except Exception as exc:  # post_response failures are the plugins'; never the client's
        log.warning("post_response failed: %s", exc)
    record_result(state, prepared, result)


def _log(state: ServerState, chat: ChatRequest, door: Door, status: int, took_ms: float) -> None:
    if log.isEnabledFor(logging.INFO):
        log.info("%s %s model=%s status=%s %.1f ms", door, chat.kind, chat.model, status, took_ms)
        if state.config.log_prompts:
            log.info("prompt: %s", [m.content for m in chat.messages] or chat.prompt)


async def handle(state: ServerState, request: Request, dialect: Dialect) -> Response:
    """One chat or completion request through whichever door it came in by."""
    started = time.perf_counter()
    try:
        data = await read_json(request, state.config.max_body_bytes)
        chat = apply_headers(dialect.parse(data), request)
        backend, upstream_model = await state.resolve(chat.model)
        ticket = state.queue.admit()
    except Exception as exc:
        return error_response(state, dialect.door, dialect.endpoint, exc)
    resolved = Resolved(chat, chat.model, backend, upstream_model, started)
    try:
        return await unless_hung_up(request.receive, _serve(state, dialect, resolved, ticket))
    except ClientDisconnected as exc:
        return error_response(state, dialect.door, dialect.endpoint, exc)


async def _serve(state: ServerState, dialect: Dialect, resolved: Resolved, ticket: Ticket | None) -> Response:
    """Wait for a slot, plan, and answer (or open the stream); the slot is released on every way out."""
    if ticket is not None and resolved.chat.stream and dialect.sse:
        # an SSE stream waits up to one keep-alive interval before committing to a 200 with ': queued'
        # comments: most waits end sooner and then get real headers (plan, overhead) or a real 429
        patience = min(state.keepalive_interval, state.queue.timeout)
        try:
            await asyncio.wait((ticket.future,), timeout=patience)
        except BaseException:
            state.queue.abandon(ticket)
            raise
        if not state.queue.granted(ticket):
            if patience < state.queue.timeout:
                return _queued_stream(state, dialect, resolved, ticket)
            state.queue.abandon(ticket)
            return error_response(state, dialect.door, dialect.endpoint, state.queue.timeout_error())
        resolved.waited_s = time.perf_counter() - ticket.enqueued
        state.metrics.queue_wait.observe(resolved.waited_s)
    elif ticket is not None:
        try:
            await state.queue.wait(ticket)
        except Exception as exc:
            return error_response(state, dialect.door, dialect.endpoint, exc)
        resolved.waited_s = time.perf_counter() - ticket.enqueued
        state.metrics.queue_wait.observe(resolved.waited_s)
    hold_started = time.perf_counter()
    try:
        prepared = await plan(state, resolved)
    except BaseException as exc:
        state.queue.release(time.perf_counter() - hold_started)
        if not isinstance(exc, Exception):
            raise
        return error_response(state, dialect.door, dialect.endpoint, exc)
    if resolved.chat.stream:
        return await _stream(state, dialect, resolved, prepared, hold_started)
    return await _complete(state, dialect, resolved, prepared, hold_started)


async def _complete(state: ServerState, dialect: Dialect, resolved: Resolved, prepared: Prepared,
                    hold_started: float) -> Response:
    sent = time.perf_counter()
    try:
        async with asyncio.timeout(state.config.upstream_timeout):
            result = await prepared.backend.chat(prepared.request, prepared.plan)
    except BaseException as exc:
        state.queue.release(time.perf_counter() - hold_started)
        await abandon(state, prepared)
        if not isinstance(exc, Exception):
            raise
        if isinstance(exc, TimeoutError):
            exc = UpstreamTimeout(f"the model server did not answer within {state.config.upstream_timeout:g} s")
        return error_response(state, dialect.door, dialect.endpoint, exc, prepared)
    now = time.perf_counter()
    upstream = now - sent
    state.queue.release(now - hold_started)
    if result.timings.total_ms is None:
        result.timings.total_ms = upstream * 1000
    result.warnings = list(prepared.plan.warnings)
    body = dumps(dialect.respond(result, resolved.client_model))
    overhead = time.perf_counter() - resolved.started - resolved.waited_s - resolved.upstream_s - upstream
    state.metrics.overhead.observe(overhead)
    state.metrics.requests.inc({"door": dialect.door, "endpoint": dialect.endpoint, "status": "200"})
    _log(state, prepared.request, dialect.door, 200, (time.perf_counter() - resolved.started) * 1000)
    return JSONBytes(body, headers=plan_headers(prepared, overhead * 1000),
                     background=BackgroundTask(_finish, state, prepared, result))


async def _first(state: ServerState, first: asyncio.Future[StreamChunk], deadline: float,
                 sse: bool) -> AsyncIterator[bytes]:
    """Wait for the first upstream chunk, sending SSE keep-alive comments meanwhile (long prefill)."""
    while not first.done():
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            raise UpstreamTimeout(f"no answer from the model server within {state.config.upstream_timeout:g} s")
        await asyncio.wait((first,), timeout=min(state.keepalive_interval, remaining))
        if not first.done() and sse:
            yield SSE_WAITING


async def _open(state: ServerState, prepared: Prepared) -> tuple[AsyncIterator[StreamChunk],
                                                                     asyncio.Future[StreamChunk]]:
    upstream = state.pipeline.stream(prepared)
    return upstream, asyncio.ensure_future(upstream.__anext__())


async def _stream(state: ServerState, dialect: Dialect, resolved: Resolved, prepared: Prepared,
                  hold_started: float) -> Response:
    """A streaming answer that holds a slot. Failures before the first chunk keep their HTTP status
    (the headers wait up to one keep-alive interval for it); later ones become an in-stream error event."""
    overhead = time.perf_counter() - resolved.started - resolved.waited_s - resolved.upstream_s
    upstream, first = await _open(state, prepared)
    grace = min(state.keepalive_interval, state.config.upstream_timeout)
    try:
        await asyncio.wait((first,), timeout=grace)
    except BaseException:  # cancelled (the client hung up, or shutdown): close upstream, free the slot
        first.cancel()
        with contextlib.suppress(BaseException):
            await first
        with contextlib.suppress(Exception):
            await upstream.aclose()  # type: ignore[attr-defined]
        state.queue.release(time.perf_counter() - hold_started)
        raise
    failure: BaseException | None = None
    if first.done():
        failure = first.exception()
        if isinstance(failure, StopAsyncIteration):
            failure = None
    elif grace >= state.config.upstream_timeout:  # nothing sent yet: a real 504 beats an in-band error
        failure = UpstreamTimeout(f"no answer from the model server within {state.config.upstream_timeout:g} s")
        first.cancel()
        with contextlib.suppress(BaseException):
            await first
    if failure is not None:
        with contextlib.suppress(Exception):
            await upstream.aclose()  # type: ignore[attr-defined]
        state.queue.release(time.perf_counter() - hold_started)
        return error_response(state, dialect.door, dialect.endpoint, failure, prepared)
    state.metrics.overhead.observe(overhead)
    body = _body(state, dialect, resolved, None, prepared, upstream, first, hold_started)
    return StreamBody(body, media_type=SSE_MEDIA if dialect.sse else NDJSON_MEDIA,
                      headers=plan_headers(prepared, overhead * 1000),
                      on_disconnect=lambda: state.metrics.stream_disconnects.inc({"door": dialect.door}))


def _queued_stream(state: ServerState, dialect: Dialect, resolved: Resolved, ticket: Ticket) -> Response:
    """An SSE stream that must wait for a slot: the response starts at once and ``: queued`` comments keep
    it alive; planning and any error (including the queue timeout) then happen in-band."""
    headers = {"X-Autotune-Queued": "1", "X-Autotune-Backend": resolved.backend.name}
    body = _body(state, dialect, resolved, ticket, None, None, None, time.perf_counter())
    return StreamBody(body, media_type=SSE_MEDIA, headers=headers,
                      on_disconnect=lambda: state.metrics.stream_disconnects.inc({"door": dialect.door}))


async def _body(state: ServerState, dialect: Dialect, resolved: Resolved, ticket: Ticket | None,
                prepared: Prepared | None, upstream: AsyncIterator[StreamChunk] | None,
                first: asyncio.Future[StreamChunk] | None, hold_started: float) -> AsyncIterator[bytes]:
    queue, metrics = state.queue, state.metrics
    has_slot = ticket is None
    done_marker = SSE_DONE if dialect.sse else b""
    encoder = dialect.encoder(resolved.chat)
    last: StreamChunk | None = None
    ttft: float | None = None
    failed_status = 200  # the status line said 200; an in-band error is counted under its own status
    try:
        if ticket is not None:
            yield SSE_QUEUED
            deadline = ticket.enqueued + queue.timeout
            while not queue.granted(ticket):
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    queue.abandon(ticket)
                    ticket = None
                    raise queue.timeout_error()
                await asyncio.wait((ticket.future,), timeout=min(state.keepalive_interval, remaining))
                if not ticket.future.done():
                    yield SSE_QUEUED
            has_slot, ticket = True, None
            hold_started = time.perf_counter()
            metrics.queue_wait.observe(hold_started - resolved.started)
            resolved.waited_s = hold_started - resolved.started
            prepared = await plan(state, resolved)
            overhead = time.perf_counter() - resolved.started - resolved.waited_s - resolved.upstream_s
            metrics.overhead.observe(overhead)
            # the headers left long ago: what they would have said goes out as SSE comments (clients skip them)
            yield plan_comments(plan_headers(prepared, overhead * 1000))
            upstream, first = await _open(state, prepared)
        assert upstream is not None and first is not None
        async for keepalive in _first(state, first, hold_started + state.config.upstream_timeout, dialect.sse):
            yield keepalive
        try:
            chunk = first.result()
        except StopAsyncIteration:
            yield done_marker
            return
        ttft = time.perf_counter() - hold_started
        if chunk.done:
            last = chunk
        yield encoder.start() + encoder.chunk(chunk)
        gap = state.config.upstream_timeout
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(None) as idle:  # armed only while waiting on the upstream
            while True:
                idle.reschedule(loop.time() + gap)
                try:
                    chunk = await anext(upstream)
                except StopAsyncIteration:
                    break
                finally:
                    if not idle.expired():
                        idle.reschedule(None)
                if chunk.done:
                    last = chunk
                frame = encoder.chunk(chunk)
                if frame:
                    yield frame
        yield done_marker
    except Exception as exc:
        if isinstance(exc, TimeoutError):
            exc = UpstreamTimeout(f"the model server sent nothing for {state.config.upstream_timeout:g} s "
                                  "in the middle of the answer")
        error = classify(exc)
        failed_status = error.status
        count_error(state, error)
        yield encoder.error(error_body(dialect.door, error)) + done_marker
    finally:
        if first is not None and not first.done():
            first.cancel()
            with contextlib.suppress(BaseException):
                await first
        if upstream is not None:
            with contextlib.suppress(Exception):
                await upstream.aclose()  # type: ignore[attr-defined]
        if has_slot:
            queue.release(time.perf_counter() - hold_started)
        elif ticket is not None:
            queue.abandon(ticket)
        metrics.requests.inc({"door": dialect.door, "endpoint": dialect.endpoint, "status": str(failed_status)})
        _log(state, resolved.chat, dialect.door, failed_status, (time.perf_counter() - resolved.started) * 1000)
        if prepared is not None:
            result = ChatResult(model=prepared.request.model, backend=prepared.backend.name)
            if last is not None:
                result.usage = last.usage or result.usage
                result.timings = last.timings or result.timings
            if ttft is not None:
                result.timings.ttft_ms = ttft * 1000
            record_result(state, prepared, result)


async def in_slot(state: ServerState, request: Request, factory: Callable[[], Awaitable[Any]]) -> Any:
    """Run one upstream call (embeddings, ...) under the queue and the upstream timeout; a client that
    hangs up meanwhile leaves the line or frees the slot and cancels the call."""
    return await unless_hung_up(request.receive, _in_slot(state, factory))


async def _in_slot(state: ServerState, factory: Callable[[], Awaitable[Any]]) -> Any:
    ticket = state.queue.admit()
    if ticket is not None:
        await state.queue.wait(ticket)
        state.metrics.queue_wait.observe(time.perf_counter() - ticket.enqueued)
    held = time.perf_counter()
    try:
        async with asyncio.timeout(state.config.upstream_timeout):
            return await factory()
    except TimeoutError:
        raise UpstreamTimeout(f"the model server did not answer within {state.config.upstream_timeout:g} s") from None
    finally:
        state.queue.release(time.perf_counter() - held)


def ok(state: ServerState, door: Door, endpoint: str, data: Any) -> Response:
    state.metrics.requests.inc({"door": door, "endpoint": endpoint, "status": "200"})
    return json_response(data)
