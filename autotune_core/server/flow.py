"""The request path both doors share: read → validate → resolve → queue → Pipeline.plan → Pipeline.run or
Pipeline.stream → translate back. The hooks run in the Pipeline only; this module is HTTP, queueing, encoding.

Proxy overhead is measured honestly (:meth:`Resolved.overhead_s`): ``X-Autotune-Overhead-Ms`` is the wall time
of this handler minus time spent waiting in the queue and waiting on the upstream server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from ..errors import UpstreamTimeout
from ..pipeline import Prepared
from .deadline import within
from .errors import dumps
from .exchange import (
    Dialect,
    Encoder,
    JSONBytes,
    Resolved,
    apply_headers,
    error_response,
    finish,
    json_response,
    log_request,
    ok,
    plan,
    plan_headers,
    read_json,
)
from .hangup import WATCH_AFTER_S, ClientDisconnected, unless_hung_up
from .queue import Slot
from .state import ServerState
from .streaming import open_stream, queued_stream

__all__ = ["Dialect", "Encoder", "error_response", "handle", "in_slot", "json_response", "ok", "read_json"]


async def handle(state: ServerState, request: Request, dialect: Dialect) -> Response:
    """One chat or completion request through whichever door it came in by."""
    started = time.perf_counter()
    try:
        data = await read_json(request, state.config.max_body_bytes)
        chat = apply_headers(dialect.parse(data), request)
        backend, upstream_model = await state.resolve(chat.model)
        slot = state.queue.take()
    except Exception as exc:
        return error_response(state, dialect.door, dialect.endpoint, exc)
    resolved = Resolved(chat, chat.model, backend, upstream_model, started)
    try:
        watch_after = WATCH_AFTER_S if slot.held else 0.0
        return await unless_hung_up(request.receive, _serve(state, dialect, resolved, slot), watch_after=watch_after)
    except ClientDisconnected as exc:
        return error_response(state, dialect.door, dialect.endpoint, exc)


async def _serve(state: ServerState, dialect: Dialect, resolved: Resolved, slot: Slot) -> Response:
    """Wait for the slot, plan, and answer (or open the stream). Every way out releases the slot, except a
    stream that starts: its body releases it when it ends (release is idempotent, so both may)."""
    try:
        if not slot.held:
            waiting = await _wait(state, dialect, resolved, slot)
            if waiting is not None:
                return waiting
        try:
            prepared = await plan(state, resolved)
        except Exception as exc:
            slot.release()
            return error_response(state, dialect.door, dialect.endpoint, exc)
        if resolved.chat.stream:
            return await open_stream(state, dialect, resolved, slot, prepared)
        return await _complete(state, dialect, resolved, slot, prepared)
    except BaseException:  # cancelled (the client hung up, shutdown): never leak the slot
        slot.release()
        raise


async def _wait(state: ServerState, dialect: Dialect, resolved: Resolved, slot: Slot) -> Response | None:
    """Wait in line; a response instead when the request should not go on to planning here (a 429, or an SSE
    stream that starts now and waits in-band), else None once the slot is held."""
    assert slot.ticket is not None
    if resolved.chat.stream and dialect.sse:
        # an SSE stream waits up to one keep-alive interval before committing to a 200 with ': queued'
        # comments: most waits end sooner and then get real headers (plan, overhead) or a real 429
        patience = min(state.keepalive_interval, state.queue.timeout)
        await asyncio.wait((slot.ticket.future,), timeout=patience)
        if not slot.poll():
            if patience < state.queue.timeout:
                return queued_stream(state, dialect, resolved, slot)
            slot.release()
            return error_response(state, dialect.door, dialect.endpoint, state.queue.timeout_error())
    else:
        try:
            await slot.wait()
        except Exception as exc:
            slot.release()
            return error_response(state, dialect.door, dialect.endpoint, exc)
    resolved.waited_s = slot.waited_s
    state.metrics.queue_wait.observe(resolved.waited_s)
    return None


async def _complete(
    state: ServerState, dialect: Dialect, resolved: Resolved, slot: Slot, prepared: Prepared
) -> Response:
    """A whole answer: Pipeline.run under the upstream timeout; post_response runs after the answer went out."""
    sent = time.perf_counter()
    try:
        # on failure Pipeline.run runs post_response itself
        result = await within(state.config.upstream_timeout, state.pipeline.run(prepared, finish=False))
    except Exception as exc:
        slot.release()
        if isinstance(exc, TimeoutError):
            exc = UpstreamTimeout(f"the model server did not answer within {state.config.upstream_timeout:g} s")
        return error_response(state, dialect.door, dialect.endpoint, exc, prepared)
    upstream = time.perf_counter() - sent
    slot.release()
    body = dumps(dialect.respond(result, resolved.client_model))
    overhead = resolved.overhead_s(upstream)
    state.metrics.overhead.observe(overhead)
    state.metrics.requests.inc({"door": dialect.door, "endpoint": dialect.endpoint, "status": "200"})
    log_request(state, prepared.request, dialect.door, 200, (time.perf_counter() - resolved.started) * 1000)
    return JSONBytes(
        body,
        headers=plan_headers(prepared, overhead * 1000),
        background=BackgroundTask(finish, state, prepared, result),
    )


async def in_slot(state: ServerState, request: Request, factory: Callable[[], Awaitable[Any]]) -> Any:
    """Run one upstream call (embeddings, ...) under the queue and the upstream timeout; a client that
    hangs up meanwhile leaves the line or frees the slot and cancels the call."""
    return await unless_hung_up(request.receive, _in_slot(state, factory))


async def _in_slot(state: ServerState, factory: Callable[[], Awaitable[Any]]) -> Any:
    slot = state.queue.take()
    try:
        await slot.wait()
        if slot.ticket is not None:
            state.metrics.queue_wait.observe(slot.waited_s)
        async with asyncio.timeout(state.config.upstream_timeout):
            return await factory()
    except TimeoutError:
        raise UpstreamTimeout(f"the model server did not answer within {state.config.upstream_timeout:g} s") from None
    finally:
        slot.release()
