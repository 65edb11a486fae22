"""Pass-through streaming: an ASGI response that writes each frame as soon as it exists.

Why not ``StreamingResponse``: we need the disconnect watcher to *cancel* the producer (so the
upstream request is cancelled and the queue slot freed at once), and nothing else on the per-chunk
path: one ``send`` per frame, no re-chunking, no buffering (``X-Accel-Buffering: no`` for proxies).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

SSE_MEDIA = "text/event-stream"
NDJSON_MEDIA = "application/x-ndjson"
SSE_DONE = b"data: [DONE]\n\n"
SSE_QUEUED = b": queued\n\n"
SSE_WAITING = b": waiting for the model\n\n"


def sse_frame(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def ndjson_frame(payload: bytes) -> bytes:
    return payload + b"\n"


class StreamBody(Response):
    """Send the headers, then every chunk of ``source``; stop and close it when the client leaves."""

    def __init__(
        self,
        source: AsyncIterator[bytes],
        *,
        media_type: str,
        headers: Mapping[str, str] | None = None,
        status_code: int = 200,
        on_disconnect: Callable[[], None] | None = None,
    ) -> None:
        self.source = source
        self.status_code = status_code
        self.media_type = media_type
        self.background = None
        self.on_disconnect = on_disconnect
        merged = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        merged.update(headers or {})
        self.init_headers(merged)

    async def _pump(self, send: Send) -> None:
        try:
            async for chunk in self.source:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            aclose = getattr(self.source, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    @staticmethod
    async def _watch(receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        pump = asyncio.ensure_future(self._pump(send))
        watch = asyncio.ensure_future(self._watch(receive))
        try:
            await asyncio.wait((pump, watch), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not pump.done():
                # the client went away (or we are being cancelled): stop the producer, which closes upstream
                pump.cancel()
                if self.on_disconnect is not None:
                    self.on_disconnect()
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watch
