"""Shared base of the fake model servers: knobs, request recording and answer planning.

The HTTP loop lives in :mod:`fakes.httpd`, request/response values in :mod:`fakes.wire`, the toy
tokenizer and embeddings in :mod:`fakes.tokens`, model metadata in :mod:`fakes.models`; their public
names are re-exported here because tests and older code import them from ``fakes.server``.

Nothing here imports autotune code.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from .httpd import HTTPLoop
from .models import GEMMA3_270M, LLAMA_3_2_1B, NOMIC_EMBED_TEXT, FakeModel, default_models
from .tokens import (
    VOCAB_SIZE,
    Output,
    common_prefix_len,
    count_tokens,
    embed_text,
    pieces,
    render_messages,
    token_id,
)
from .wire import (
    BadJSON,
    Drop,
    Handler,
    Hang,
    RecordedRequest,
    Request,
    Response,
    StreamResponse,
    dumps,
    json_response,
)

__all__ = [
    "COMMON_KNOBS",
    "DEFAULT_RESPONSE_TEXT",
    "GEMMA3_270M",
    "LLAMA_3_2_1B",
    "NOMIC_EMBED_TEXT",
    "VOCAB_SIZE",
    "BadJSON",
    "Drop",
    "FakeModel",
    "FakeServer",
    "Handler",
    "Hang",
    "Output",
    "RecordedRequest",
    "Request",
    "Response",
    "StreamResponse",
    "common_prefix_len",
    "count_tokens",
    "default_models",
    "dumps",
    "embed_text",
    "json_response",
    "now_ns",
    "pieces",
    "render_messages",
    "token_id",
]

DEFAULT_RESPONSE_TEXT = "Hello! How can I help you today?"

# Knobs every fake has; FakeServer.set() accepts exactly these plus the subclass's own.
COMMON_KNOBS = (
    "response_text",
    "tokens_per_chunk",
    "chunk_delay",
    "first_byte_delay",
    "fail_mid_stream_after",
    "error_mid_stream_after",
    "status_override",
    "status_override_count",
    "hang",
    "hang_seconds",
    "drop_connection",
    "tool_calls",
    "prompt_tps",
    "eval_tps",
    "embedding_dims",
    "record_requests",
)


class FakeServer(HTTPLoop):
    """Base class: the HTTP machinery, request recording and the shared failure knobs.

    Knobs are plain attributes; change them at any time (``fake.chunk_delay = 0.01``) or with :meth:`set`.

    * ``response_text``: str, or a callable ``(request_json) -> str``.
    * ``tokens_per_chunk``: toy-tokenizer pieces per streamed chunk.
    * ``chunk_delay``: seconds slept before every streamed chunk after the first.
    * ``first_byte_delay``: seconds slept before the first byte of any inference response.
    * ``fail_mid_stream_after=N``: after N chunks, close the connection without ending the chunked body.
    * ``error_mid_stream_after=N``: after N chunks, send the server's in-band error event and end the stream.
    * ``status_override``: int, or ``(status, json_body)``: inference endpoints answer with it.
      ``status_override_count``: apply it that many times only (``None`` = always).
    * ``hang``: inference endpoints never answer (for ``hang_seconds``, default 30, or until :meth:`close`).
    * ``drop_connection``: inference endpoints close the connection without answering.
    * ``tool_calls``: list of ``{"name": str, "arguments": dict}``; answered when the request offers
      ``tools``.
    * ``prompt_tps`` / ``eval_tps``: rates used for the *reported* (simulated) timings.
    * ``embedding_dims``: length of the hashed bag-of-words vectors (64).
    * ``record_requests``: append to ``.requests`` (turn off for long benchmarks).
    """

    name = "fake"
    #: Paths (after normalisation) the failure knobs apply to.
    inference_paths: frozenset[str] = frozenset()

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        response_text: str | Callable[[Any], str] = DEFAULT_RESPONSE_TEXT,
        tokens_per_chunk: int = 1,
        chunk_delay: float = 0.0,
        first_byte_delay: float = 0.0,
        fail_mid_stream_after: int | None = None,
        error_mid_stream_after: int | None = None,
        status_override: int | tuple[int, Any] | None = None,
        status_override_count: int | None = None,
        hang: bool = False,
        hang_seconds: float = 30.0,
        drop_connection: bool = False,
        tool_calls: list[dict[str, Any]] | None = None,
        prompt_tps: float = 2000.0,
        eval_tps: float = 100.0,
        embedding_dims: int = 64,
        record_requests: bool = True,
    ) -> None:
        self.host = host
        self._want_port = port
        self.port = 0
        self.response_text = response_text
        self.tokens_per_chunk = tokens_per_chunk
        self.chunk_delay = chunk_delay
        self.first_byte_delay = first_byte_delay
        self.fail_mid_stream_after = fail_mid_stream_after
        self.error_mid_stream_after = error_mid_stream_after
        self.status_override = status_override
        self.status_override_count = status_override_count
        self.hang = hang
        self.hang_seconds = hang_seconds
        self.drop_connection = drop_connection
        self.tool_calls = tool_calls
        self.prompt_tps = prompt_tps
        self.eval_tps = eval_tps
        self.embedding_dims = embedding_dims
        self.record_requests = record_requests

        self.requests: list[RecordedRequest] = []
        #: Streams the client abandoned before the end (it closed its side).
        self.client_disconnects = 0
        #: Requests that hit an injected failure (hang, drop, status override, mid-stream failure).
        self.injected_failures = 0
        #: Tracebacks of exceptions raised by handlers (bugs in the fake; each answered with a 500).
        self.handler_errors: list[str] = []

        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self._routes: dict[tuple[str, str], Handler] = {}
        self._closed = False
        self._register_routes()

    # -- subclass API ---------------------------------------------------------------------------------------

    def _register_routes(self) -> None:
        """Fill ``self._routes`` with ``(METHOD, path) -> async handler``."""

    def route(self, method: str, path: str, handler: Handler) -> None:
        self._routes[(method.upper(), path)] = handler

    def normalize_path(self, path: str) -> str:
        return path

    def error_body(self, status: int, message: str) -> Any:
        """JSON body for an error in this server's dialect."""
        return {"error": message}

    def not_found(self, req: Request) -> Response:
        return Response(status=404, body=b"404 page not found", content_type="text/plain")

    def stream_error_event(self, message: str) -> bytes:
        """The in-band error a streaming response ends with when ``error_mid_stream_after`` fires."""
        return dumps({"error": message}) + b"\n"

    def knob_names(self) -> tuple[str, ...]:
        return COMMON_KNOBS

    def reset_state(self) -> None:
        """Forget model state (subclasses); requests are kept."""

    # -- public API -----------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def set(self, **knobs: Any) -> FakeServer:
        allowed = set(self.knob_names())
        for key, value in knobs.items():
            if key not in allowed:
                raise TypeError(f"{type(self).__name__} has no knob {key!r}")
            setattr(self, key, value)
        return self

    def clear_requests(self) -> None:
        self.requests.clear()

    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path and (method is None or r.method == method)]

    def last_request(self, path: str | None = None) -> RecordedRequest:
        for r in reversed(self.requests):
            if path is None or r.path == path:
                return r
        raise LookupError(f"no request to {path!r}")

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"

    # -- helpers for subclasses -----------------------------------------------------------------------------

    def text_for(self, body: Any) -> str:
        text = self.response_text
        if callable(text):
            return str(text(body))
        return text

    def chunk_texts(self, response_pieces: list[str]) -> list[str]:
        k = max(1, int(self.tokens_per_chunk))
        return ["".join(response_pieces[i : i + k]) for i in range(0, len(response_pieces), k)]

    def timed_events(self, payloads: list[bytes]) -> list[tuple[float, bytes]]:
        """First payload immediately, every later one after ``chunk_delay``."""
        d = float(self.chunk_delay)
        return [(0.0 if i == 0 else d, p) for i, p in enumerate(payloads)]

    def apply_stream_failures(self, stream: StreamResponse, error_event: bytes | None = None) -> StreamResponse:
        """Apply ``fail_mid_stream_after`` / ``error_mid_stream_after`` to a built stream; ``error_event`` is
        the in-band error payload (default: :meth:`stream_error_event`)."""
        if self.fail_mid_stream_after is not None:
            stream.fail_after = int(self.fail_mid_stream_after)
            self.injected_failures += 1
        elif self.error_mid_stream_after is not None:
            n = max(0, min(int(self.error_mid_stream_after), len(stream.events)))
            err = error_event or self.stream_error_event("an error was encountered while running the model")
            stream.events = [*stream.events[:n], (float(self.chunk_delay) if n else 0.0, err)]
            self.injected_failures += 1
        return stream

    def plan_output(
        self,
        body: Any,
        *,
        max_tokens: int | None = None,
        stop: list[str] | str | None = None,
        json_mode: bool = False,
        tools_offered: bool = False,
        room: int | None = None,
    ) -> Output:
        """Decide the answer: configured tool calls (when tools were offered), else ``response_text`` cut by
        ``stop`` strings, ``max_tokens`` and the room left in the context."""
        if self.tool_calls and tools_offered:
            calls = [{"name": c["name"], "arguments": dict(c.get("arguments") or {})} for c in self.tool_calls]
            return Output("", [], calls, "tool_calls")
        text = self.text_for(body)
        if json_mode:
            try:
                json.loads(text)
            except ValueError:
                text = json.dumps({"response": text})
        finish = "stop"
        if isinstance(stop, str):
            stops = [stop]
        elif isinstance(stop, list):
            stops = [s for s in stop if isinstance(s, str) and s]
        else:
            stops = []
        cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
        if cut >= 0:
            text = text[:cut]
        ps = pieces(text)
        limit = max_tokens if max_tokens is not None and max_tokens >= 0 else None
        if room is not None:
            room = max(0, room)
            limit = room if limit is None else min(limit, room)
        if limit is not None and len(ps) > limit:
            ps = ps[:limit]
            text = "".join(ps)
            finish = "length"
        return Output(text, ps, None, finish)


def now_ns() -> int:
    return time.time_ns()
