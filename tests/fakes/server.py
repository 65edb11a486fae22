"""Shared runner for the fake model servers.

A tiny HTTP/1.1 server on a private asyncio loop in a background thread:

* binds 127.0.0.1 on an ephemeral port; start-up takes a few milliseconds;
* keep-alive connections, ``Content-Length`` and chunked request bodies;
* every response (head + body) goes out in ONE ``write`` on a ``TCP_NODELAY`` socket, and every streamed
  NDJSON line / SSE event is one HTTP chunk written in one ``write`` -- no Nagle / delayed-ACK stalls;
* failure injection shared by all fakes (``hang``, ``drop_connection``, ``status_override``,
  ``fail_mid_stream_after``, ``error_mid_stream_after``, ``first_byte_delay``, ``chunk_delay``).

Also holds what the fakes share: :class:`FakeModel` (GGUF-style metadata), the toy tokenizer
(:func:`pieces`, :func:`count_tokens`, :func:`token_id`), and :func:`embed_text` (hashed bag of words).

Nothing here imports autotune code.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import math
import re
import socket
import threading
import time
import traceback
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

__all__ = [
    "GEMMA3_270M",
    "LLAMA_3_2_1B",
    "NOMIC_EMBED_TEXT",
    "Drop",
    "FakeModel",
    "FakeServer",
    "Hang",
    "Output",
    "RecordedRequest",
    "Request",
    "Response",
    "StreamResponse",
    "common_prefix_len",
    "count_tokens",
    "default_models",
    "embed_text",
    "json_response",
    "pieces",
    "render_messages",
    "token_id",
]

# ------------------------------------------------------------------------------------------------------------
# Toy tokenizer and embeddings
# ------------------------------------------------------------------------------------------------------------

# Every piece is optional leading whitespace plus at most 4 non-space characters (about chars/4 for prose);
# the second alternative catches trailing whitespace, so "".join(pieces(t)) == t always holds.
_PIECE_RE = re.compile(r"\s*\S{1,4}|\s+")
VOCAB_SIZE = 32000


def pieces(text: str) -> list[str]:
    """Split ``text`` into token-like pieces; joining them gives back ``text`` exactly."""
    return _PIECE_RE.findall(text)


def count_tokens(text: str) -> int:
    return len(pieces(text))


def token_id(piece: str) -> int:
    """Deterministic id of a piece (1..VOCAB_SIZE-1)."""
    return zlib.crc32(piece.encode("utf-8")) % (VOCAB_SIZE - 1) + 1


def common_prefix_len(a: list[str], b: list[str]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


_WORD_RE = re.compile(r"\w+")


def embed_text(text: str, dims: int = 64) -> list[float]:
    """Hashed bag of words, L2-normalised: similar texts get a high cosine, identical texts cosine 1."""
    vec = [0.0] * dims
    for word in _WORD_RE.findall(text.lower()):
        h = zlib.crc32(word.encode("utf-8"))
        vec[h % dims] += 1.0 if (h >> 16) & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vec))
    if norm == 0.0:
        return vec
    return [v / norm for v in vec]


# ------------------------------------------------------------------------------------------------------------
# Model metadata
# ------------------------------------------------------------------------------------------------------------


@dataclass
class FakeModel:
    """GGUF-style metadata of one model, as the fakes report it (``/api/show``, ``/v1/models``, ...)."""

    name: str
    architecture: str = "llama"
    block_count: int = 16
    head_count: int = 32
    head_count_kv: int | list[int] = 8
    embedding_length: int = 2048
    context_length: int = 131072
    key_length: int | None = None
    value_length: int | None = None
    sliding_window: int | None = None
    family: str | None = None
    parameter_size: str = "1.2B"
    parameter_count: int = 1_235_814_432
    quantization_level: str = "Q8_0"
    file_type: int = 7
    size: int = 1_321_098_329
    capabilities: list[str] = field(default_factory=lambda: ["completion", "tools"])
    # Modelfile PARAMETER defaults (Ollama); runner keys here (num_ctx, ...) act as model defaults.
    parameters: dict[str, Any] = field(default_factory=dict)
    template: str = "{{ .Prompt }}"
    extra_info: dict[str, Any] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.name.encode()).hexdigest()

    @property
    def is_embedding_only(self) -> bool:
        return "embedding" in self.capabilities and "completion" not in self.capabilities

    def renamed(self, name: str) -> FakeModel:
        return dataclasses.replace(self, name=name)

    def kv_heads_total(self) -> int:
        if isinstance(self.head_count_kv, list):
            return sum(self.head_count_kv)
        return self.head_count_kv * self.block_count

    def kv_bytes(self, n_ctx: int, bytes_per_elem: float = 2.0) -> int:
        """KV cache size: ctx x sum over layers of kv_heads x (key_length + value_length) x bytes/elem."""
        k = self.key_length or self.embedding_length // self.head_count
        v = self.value_length or self.embedding_length // self.head_count
        return int(n_ctx * self.kv_heads_total() * (k + v) * bytes_per_elem)

    def model_info(self) -> dict[str, Any]:
        a = self.architecture
        info: dict[str, Any] = {
            "general.architecture": a,
            "general.file_type": self.file_type,
            "general.parameter_count": self.parameter_count,
            "general.quantization_version": 2,
            f"{a}.block_count": self.block_count,
            f"{a}.context_length": self.context_length,
            f"{a}.embedding_length": self.embedding_length,
            f"{a}.attention.head_count": self.head_count,
            f"{a}.attention.head_count_kv": self.head_count_kv,
        }
        if self.key_length is not None:
            info[f"{a}.attention.key_length"] = self.key_length
        if self.value_length is not None:
            info[f"{a}.attention.value_length"] = self.value_length
        if self.sliding_window is not None:
            info[f"{a}.attention.sliding_window"] = self.sliding_window
        info.update(self.extra_info)
        return dict(sorted(info.items()))

    def parameters_text(self) -> str:
        """The ``parameters`` string of ``/api/show`` (Modelfile ``PARAMETER`` lines)."""
        lines: list[str] = []
        for key, value in self.parameters.items():
            values = value if isinstance(value, list) else [value]
            for v in values:
                shown = json.dumps(v) if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else v
                lines.append(f"{key:<31}{shown}")
        return "\n".join(lines)


# The three default models (Ollama names; the OpenAI-style fakes rename them).
LLAMA_3_2_1B = FakeModel(
    name="llama3.2:1b",
    architecture="llama",
    block_count=16,
    head_count=32,
    head_count_kv=8,
    embedding_length=2048,
    context_length=131072,
    parameter_size="1.2B",
    parameter_count=1_235_814_432,
    quantization_level="Q8_0",
    file_type=7,
    size=1_321_098_329,
    capabilities=["completion", "tools"],
    parameters={"stop": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]},
    extra_info={
        "llama.rope.freq_base": 500000,
        "llama.vocab_size": 128256,
        "llama.feed_forward_length": 8192,
    },
)
GEMMA3_270M = FakeModel(
    name="gemma3:270m",
    architecture="gemma3",
    block_count=18,
    head_count=4,
    head_count_kv=1,
    embedding_length=640,
    context_length=32768,
    key_length=256,
    value_length=256,
    sliding_window=512,
    parameter_size="268.10M",
    parameter_count=268_098_176,
    quantization_level="Q8_0",
    file_type=7,
    size=291_554_930,
    capabilities=["completion"],
    parameters={"stop": ["<end_of_turn>"], "temperature": 1, "top_k": 64, "top_p": 0.95},
    extra_info={"gemma3.feed_forward_length": 2048, "gemma3.rope.freq_base": 1000000},
)
NOMIC_EMBED_TEXT = FakeModel(
    name="nomic-embed-text:latest",
    architecture="nomic-bert",
    block_count=12,
    head_count=12,
    head_count_kv=12,
    embedding_length=768,
    context_length=2048,
    parameter_size="137M",
    parameter_count=136_727_040,
    quantization_level="F16",
    file_type=1,
    size=274_302_450,
    capabilities=["embedding"],
    parameters={"num_ctx": 8192},
    extra_info={"nomic-bert.pooling_type": 1},
)


def default_models() -> list[FakeModel]:
    """Fresh copies of the three default models."""
    return [dataclasses.replace(m) for m in (LLAMA_3_2_1B, GEMMA3_270M, NOMIC_EMBED_TEXT)]


def render_messages(messages: Any, tools: Any = None) -> str:
    """A fixed toy chat template. Tools go first (like most templates put them in the system area), so a
    changed tool list breaks the prefix cache -- as it does on real servers."""
    parts: list[str] = []
    if tools:
        parts.append("<|tools|>" + json.dumps(tools, sort_keys=True, separators=(",", ":")) + "<|end|>\n")
    for m in messages if isinstance(messages, list) else []:
        if not isinstance(m, dict):
            continue
        content = m.get("content")
        if isinstance(content, list):  # OpenAI content parts
            content = "".join(
                str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text"
            )
        text = "" if content is None else str(content)
        if m.get("tool_calls"):
            text += json.dumps(m["tool_calls"], sort_keys=True, separators=(",", ":"))
        parts.append(f"<|{m.get('role', 'user')}|>\n{text}<|end|>\n")
    parts.append("<|assistant|>\n")
    return "".join(parts)


@dataclass
class Output:
    """What the model "generates" for one request."""

    text: str
    pieces: list[str]
    tool_calls: list[dict[str, Any]] | None
    finish_reason: str  # OpenAI style: stop | length | tool_calls


# ------------------------------------------------------------------------------------------------------------
# Requests and responses
# ------------------------------------------------------------------------------------------------------------


class RecordedRequest(tuple):
    """``(method, path, json)`` as a 3-tuple; ``.headers``, ``.query`` and ``.raw`` as extra attributes."""

    def __new__(
        cls, method: str, path: str, json_body: Any, headers: dict[str, str], query: str, raw: bytes
    ) -> RecordedRequest:
        self = super().__new__(cls, (method, path, json_body))
        self.headers = headers
        self.query = query
        self.raw = raw
        return self

    @property
    def method(self) -> str:
        return self[0]

    @property
    def path(self) -> str:
        return self[1]

    @property
    def json(self) -> Any:
        return self[2]


class BadJSON(Exception):
    pass


_NO_JSON = object()


class Request:
    __slots__ = ("_json", "body", "headers", "method", "path", "query")

    def __init__(self, method: str, path: str, query: str, headers: dict[str, str], body: bytes) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self._json: Any = _NO_JSON

    def json(self) -> Any:
        """The parsed JSON body; ``None`` for an empty body; raises :class:`BadJSON` if it is not JSON."""
        if self._json is _NO_JSON:
            if not self.body.strip():
                self._json = None
            else:
                try:
                    self._json = json.loads(self.body)
                except ValueError as exc:
                    raise BadJSON(str(exc)) from exc
        return self._json

    def query_params(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for part in self.query.split("&"):
            if part:
                k, _, v = part.partition("=")
                out[k] = v
        return out


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class StreamResponse:
    """A chunked streaming response. ``events`` are ``(delay_before_seconds, payload)``; each payload is one
    HTTP chunk written in one ``write``. ``on_done`` runs after the last chunk (or after an abort)."""

    events: list[tuple[float, bytes]]
    status: int = 200
    content_type: str = "application/x-ndjson"
    headers: list[tuple[str, str]] = field(default_factory=list)
    fail_after: int | None = None
    on_done: Callable[[], None] | None = None


@dataclass
class Hang:
    """Accept the request and never answer (until ``seconds`` pass or the server closes)."""

    seconds: float = 30.0


@dataclass
class Drop:
    """Close the connection without sending anything."""


Handler = Callable[[Request], Awaitable["Response | StreamResponse | Hang | Drop"]]


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def json_response(obj: Any, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status=status, body=dumps(obj), headers=headers or [])


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _head(status: int, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_reason(status)}"]
    lines.extend(f"{k}: {v}" for k, v in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


# ------------------------------------------------------------------------------------------------------------
# The server
# ------------------------------------------------------------------------------------------------------------

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


class FakeServer:
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

    def start(self) -> FakeServer:
        if self._thread is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._want_port))
        sock.listen(128)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        loop = asyncio.new_event_loop()
        self._loop = loop
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._serve_conn, sock=sock, limit=1 << 20)
                )
            except BaseException as exc:  # pragma: no cover - start-up failure is reported to start()
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name=f"{self.name}-{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(5.0):  # pragma: no cover
            raise RuntimeError(f"{self.name} did not start")
        if errors:  # pragma: no cover
            raise errors[0]
        return self

    def close(self) -> None:
        if self._closed or self._loop is None or self._thread is None:
            self._closed = True
            return
        self._closed = True
        loop = self._loop
        if loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            with contextlib.suppress(Exception):
                fut.result(timeout=5.0)
            loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout=5.0)
        if not self._thread.is_alive():
            loop.close()

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

    def apply_stream_failures(
        self, stream: StreamResponse, error_event: bytes | None = None
    ) -> StreamResponse:
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
            calls = [
                {"name": c["name"], "arguments": dict(c.get("arguments") or {})} for c in self.tool_calls
            ]
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

    # -- HTTP machinery -------------------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._conns):
            task.cancel()
        if self._conns:
            await asyncio.wait(list(self._conns), timeout=2.0)

    async def _serve_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            keep_alive = True
            while keep_alive:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    break
                keep_alive = await self._one_request(head, reader, writer)
        except (asyncio.CancelledError, ConnectionError):
            pass
        finally:
            self._conns.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _read_body(self, headers: dict[str, str], reader: asyncio.StreamReader) -> bytes:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            for _ in range(1 << 20):  # bounded: at most a million chunks
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # trailers, if any, end with an empty line
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":
                        pass
                    break
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
            return b"".join(parts)
        length = int(headers.get("content-length", "0") or "0")
        return await reader.readexactly(length) if length > 0 else b""

    async def _one_request(
        self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        try:
            text = head[:-4].decode("latin-1")
            request_line, *header_lines = text.split("\r\n")
            method, target, version = request_line.split(" ", 2)
            headers: dict[str, str] = {}
            for line in header_lines:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        except ValueError:
            writer.write(_head(400, [("Content-Length", "0"), ("Connection", "close")]))
            return False
        if headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            body = await self._read_body(headers, reader)
        except (asyncio.IncompleteReadError, ValueError, asyncio.LimitOverrunError):
            return False
        conn_hdr = headers.get("connection", "").lower()
        keep_alive = (version == "HTTP/1.1" and conn_hdr != "close") or conn_hdr == "keep-alive"
        raw_path, _, query = target.partition("?")
        req = Request(method.upper(), raw_path, query, headers, body)
        try:
            recorded_json = req.json()
        except BadJSON:
            recorded_json = None
        if self.record_requests:
            self.requests.append(RecordedRequest(req.method, raw_path, recorded_json, headers, query, body))

        path = self.normalize_path(raw_path)
        req.path = path
        result: Response | StreamResponse | Hang | Drop
        injected = self._injected(path) if path in self.inference_paths else None
        if injected is not None:
            result = injected
        else:
            handler = self._routes.get((req.method, path))
            if handler is None:
                if any(p == path for (_, p) in self._routes):
                    result = Response(status=405, body=b"405 method not allowed", content_type="text/plain")
                else:
                    result = self.not_found(req)
            else:
                try:
                    result = await handler(req)
                except BadJSON as exc:
                    result = json_response(self.error_body(400, str(exc)), status=400)
                except Exception:  # a bug in the fake: answer 500 and keep the traceback for the test
                    self.handler_errors.append(traceback.format_exc())
                    result = json_response(self.error_body(500, "fake server bug: see .handler_errors"), 500)
        if path in self.inference_paths and self.first_byte_delay > 0 and not isinstance(result, Drop):
            await asyncio.sleep(float(self.first_byte_delay))
        if isinstance(result, Hang):
            await asyncio.sleep(result.seconds)
            return False
        if isinstance(result, Drop):
            return False
        if isinstance(result, StreamResponse):
            return await self._write_stream(result, reader, writer, keep_alive)
        hdrs = [
            ("Content-Type", result.content_type),
            ("Content-Length", str(len(result.body))),
            *result.headers,
        ]
        if not keep_alive:
            hdrs.append(("Connection", "close"))
        writer.write(_head(result.status, hdrs) + (b"" if req.method == "HEAD" else result.body))
        await writer.drain()
        return keep_alive

    def _injected(self, path: str) -> Response | Hang | Drop | None:
        if self.hang:
            self.injected_failures += 1
            return Hang(float(self.hang_seconds))
        if self.drop_connection:
            self.injected_failures += 1
            return Drop()
        override = self.status_override
        if override is None:
            return None
        if self.status_override_count is not None:
            if self.status_override_count <= 0:
                return None
            self.status_override_count -= 1
        self.injected_failures += 1
        if isinstance(override, tuple):
            status, body = override
        else:
            status, body = int(override), None
        if body is None:
            body = self.error_body(status, f"injected failure ({status} {_reason(status)})")
        if isinstance(body, bytes | str):
            raw = body.encode() if isinstance(body, str) else body
            return Response(status=status, body=raw, content_type="text/plain; charset=utf-8")
        return json_response(body, status=status)

    async def _write_stream(
        self,
        stream: StreamResponse,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        keep_alive: bool,
    ) -> bool:
        hdrs = [("Content-Type", stream.content_type), ("Transfer-Encoding", "chunked"), *stream.headers]
        if not keep_alive:
            hdrs.append(("Connection", "close"))
        pending_head = _head(stream.status, hdrs)
        events = stream.events
        last = len(events) - 1
        try:
            if stream.fail_after is not None and stream.fail_after <= 0:
                writer.write(pending_head)
                await writer.drain()
                return False
            for i, (delay, payload) in enumerate(events):
                if delay > 0:
                    await asyncio.sleep(delay)
                if reader.at_eof() or writer.is_closing():
                    self.client_disconnects += 1
                    return False
                data = _chunk(payload)
                if i == 0:
                    data = pending_head + data
                if i == last:
                    data += b"0\r\n\r\n"
                writer.write(data)
                await writer.drain()
                if stream.fail_after is not None and i + 1 >= stream.fail_after and i != last:
                    return False  # caller closes the socket: the chunked body never terminates
            if not events:
                writer.write(pending_head + b"0\r\n\r\n")
                await writer.drain()
            return keep_alive
        except ConnectionError:
            self.client_disconnects += 1
            return False
        finally:
            if stream.on_done is not None:
                stream.on_done()


def now_ns() -> int:
    return time.time_ns()
