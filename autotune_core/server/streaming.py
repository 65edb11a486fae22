"""Streaming answers: open the stream through the Pipeline, wait in line in-band when an SSE stream must queue,
then pump chunks through the door's encoder. The slot is released in one place, the body's ``finally``.

Failures before the first chunk keep their HTTP status (the headers wait up to one keep-alive interval for
it); later ones become an in-stream error event followed by a clean end of the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from starlette.responses import Response

from ..errors import UpstreamTimeout
from ..messages import ChatResult, StreamChunk
from ..pipeline import Prepared
from .errors import classify, error_body
from .exchange import (
    Dialect,
    Encoder,
    Resolved,
    count_error,
    error_response,
    log_request,
    plan,
    plan_comments,
    plan_headers,
    record_result,
)
from .queue import Slot
from .sse import NDJSON_MEDIA, SSE_DONE, SSE_MEDIA, SSE_QUEUED, SSE_WAITING, StreamBody
from .state import ServerState


@dataclass
class _Stream:
    """One stream's moving parts, shared by the queue wait, the pump and the cleanup."""

    state: ServerState
    dialect: Dialect
    resolved: Resolved
    slot: Slot
    prepared: Prepared | None = None
    upstream: AsyncIterator[StreamChunk] | None = None
    first: asyncio.Future[StreamChunk] | None = None
    encoder: Encoder = field(init=False)
    last: StreamChunk | None = None
    ttft_s: float | None = None
    #: the status line said 200; an in-band error is counted under its own status
    status: int = 200

    def __post_init__(self) -> None:
        self.encoder = self.dialect.encoder(self.resolved.chat)

    def open(self) -> None:
        assert self.prepared is not None
        self.upstream = self.state.pipeline.stream(self.prepared)
        self.first = asyncio.ensure_future(self.upstream.__anext__())

    async def close_upstream(self) -> None:
        if self.first is not None and not self.first.done():
            self.first.cancel()
            with contextlib.suppress(BaseException):
                await self.first
        if self.upstream is not None:
            with contextlib.suppress(Exception):
                await self.upstream.aclose()  # type: ignore[attr-defined]

    def response(self, headers: dict[str, str]) -> Response:
        media = SSE_MEDIA if self.dialect.sse else NDJSON_MEDIA
        return StreamBody(
            _body(self),
            media_type=media,
            headers=headers,
            on_disconnect=lambda: self.state.metrics.stream_disconnects.inc({"door": self.dialect.door}),
        )


async def open_stream(
    state: ServerState, dialect: Dialect, resolved: Resolved, slot: Slot, prepared: Prepared
) -> Response:
    """A planned stream that holds its slot: a real status if it fails before its first chunk (within one
    keep-alive interval), else a 200 whose body the pump writes."""
    overhead = resolved.overhead_s()
    stream = _Stream(state, dialect, resolved, slot, prepared)
    stream.open()
    assert stream.first is not None
    grace = min(state.keepalive_interval, state.config.upstream_timeout)
    try:
        await asyncio.wait((stream.first,), timeout=grace)
    except BaseException:  # cancelled (the client hung up, or shutdown): close upstream, free the slot
        await stream.close_upstream()
        slot.release()
        raise
    failure: BaseException | None = None
    if stream.first.done():
        failure = stream.first.exception()
        if isinstance(failure, StopAsyncIteration):
            failure = None
    elif grace >= state.config.upstream_timeout:  # nothing sent yet: a real 504 beats an in-band error
        failure = UpstreamTimeout(f"no answer from the model server within {state.config.upstream_timeout:g} s")
    if failure is not None:
        await stream.close_upstream()
        slot.release()
        return error_response(state, dialect.door, dialect.endpoint, failure, prepared)
    state.metrics.overhead.observe(overhead)
    return stream.response(plan_headers(prepared, overhead * 1000))


def queued_stream(state: ServerState, dialect: Dialect, resolved: Resolved, slot: Slot) -> Response:
    """An SSE stream that must wait for a slot: the response starts at once and ``: queued`` comments keep it
    alive; planning and any error (including the queue timeout) then happen in-band."""
    headers = {"X-Autotune-Queued": "1", "X-Autotune-Backend": resolved.backend.name}
    return _Stream(state, dialect, resolved, slot).response(headers)


async def _wait_in_line(stream: _Stream) -> AsyncIterator[bytes]:
    """``: queued`` comments until the slot is ours, then plan and open the stream; the plan headers that left
    long ago go out as SSE comments (clients skip them)."""
    state, slot, resolved = stream.state, stream.slot, stream.resolved
    assert slot.ticket is not None
    yield SSE_QUEUED
    deadline = slot.ticket.enqueued + state.queue.timeout
    while not slot.poll():
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            slot.release()
            raise state.queue.timeout_error()
        await asyncio.wait((slot.ticket.future,), timeout=min(state.keepalive_interval, remaining))
        if not slot.ticket.future.done():
            yield SSE_QUEUED
    resolved.waited_s = slot.waited_s
    state.metrics.queue_wait.observe(resolved.waited_s)
    stream.prepared = await plan(state, resolved)
    overhead = resolved.overhead_s()
    state.metrics.overhead.observe(overhead)
    yield plan_comments(plan_headers(stream.prepared, overhead * 1000))
    stream.open()


async def _first(stream: _Stream) -> AsyncIterator[bytes]:
    """Wait for the first upstream chunk, sending SSE keep-alive comments meanwhile (long prefill)."""
    state, first = stream.state, stream.first
    assert first is not None and stream.slot.held_since is not None
    deadline = stream.slot.held_since + state.config.upstream_timeout
    while not first.done():
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            raise UpstreamTimeout(f"no answer from the model server within {state.config.upstream_timeout:g} s")
        await asyncio.wait((first,), timeout=min(state.keepalive_interval, remaining))
        if not first.done() and stream.dialect.sse:
            yield SSE_WAITING


async def _pump(stream: _Stream) -> AsyncIterator[bytes]:
    """Every chunk through the encoder; a model server silent for ``upstream_timeout`` mid-answer is cut off."""
    async for keepalive in _first(stream):
        yield keepalive
    assert stream.first is not None and stream.upstream is not None and stream.slot.held_since is not None
    try:
        chunk = stream.first.result()
    except StopAsyncIteration:
        return
    stream.ttft_s = time.perf_counter() - stream.slot.held_since
    if chunk.done:
        stream.last = chunk
    yield stream.encoder.start() + stream.encoder.chunk(chunk)
    gap = stream.state.config.upstream_timeout
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(None) as idle:  # armed only while waiting on the upstream
        while True:
            idle.reschedule(loop.time() + gap)
            try:
                chunk = await anext(stream.upstream)
            except StopAsyncIteration:
                break
            finally:
                if not idle.expired():
                    idle.reschedule(None)
            if chunk.done:
                stream.last = chunk
            frame = stream.encoder.chunk(chunk)
            if frame:
                yield frame


async def _body(stream: _Stream) -> AsyncIterator[bytes]:
    """The queue wait (queued SSE only), the pump, and the one cleanup: upstream closed, slot released,
    metrics counted."""
    state, dialect, resolved = stream.state, stream.dialect, stream.resolved
    done_marker = SSE_DONE if dialect.sse else b""
    try:
        if stream.prepared is None:
            async for frame in _wait_in_line(stream):
                yield frame
        async for frame in _pump(stream):
            yield frame
        yield done_marker
    except Exception as exc:
        if isinstance(exc, TimeoutError):
            exc = UpstreamTimeout(
                f"the model server sent nothing for {state.config.upstream_timeout:g} s in the middle of the answer"
            )
        error = classify(exc)
        stream.status = error.status
        count_error(state, error)
        yield stream.encoder.error(error_body(dialect.door, error)) + done_marker
    finally:
        await stream.close_upstream()
        stream.slot.release()
        state.metrics.requests.inc({"door": dialect.door, "endpoint": dialect.endpoint, "status": str(stream.status)})
        log_request(state, resolved.chat, dialect.door, stream.status, (time.perf_counter() - resolved.started) * 1000)
        if stream.prepared is not None:
            _record(state, stream)


def _record(state: ServerState, stream: _Stream) -> None:
    assert stream.prepared is not None
    result = ChatResult(model=stream.prepared.request.model, backend=stream.prepared.backend.name)
    if stream.last is not None:
        result.usage = stream.last.usage or result.usage
        result.timings = stream.last.timings or result.timings
    if stream.ttft_s is not None:
        result.timings.ttft_ms = stream.ttft_s * 1000
    record_result(state, stream.prepared, result)
