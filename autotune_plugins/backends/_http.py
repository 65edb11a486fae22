"""(shared, not a plugin) The upstream HTTP/1.1 client of the network backends: asyncio protocols + httptools.

Why our own and not aiohttp or httpx: every proxied request makes one upstream call, and the client's own
machinery was the largest single share of the proxy's CPU (aiohttp ~22 % of the sampled Python time per
request). A model server speaks plain HTTP/1.1 with JSON bodies, so what a request needs is small: one write
of the request, llhttp (httptools, which uvicorn already uses for our front doors) to parse the answer, and a
keep-alive pool. At 32 concurrent calls on uvloop this serves ~32,000 calls/s at ~0.027 ms of CPU each, where
aiohttp serves ~10,000 at 0.08–0.14 ms and httpx ~750 at 1.3 ms (``bench/upstream_clients.py``;
docs/benchmarks.md has the whole proxy measured with it).

What it guarantees, each tested in ``tests/backends/test_upstream_client.py`` and ``test_upstream_pool.py``:

- every transport failure becomes one of the core's typed errors (timeout → ``UpstreamTimeout``, refused →
  ``BackendUnavailable``, anything else → ``UpstreamError``), so a backend never sees a socket exception;
- ``timeout`` bounds connecting (at most 5 s) and each wait for bytes, not the whole answer: a long generation
  that keeps streaming is fine, a silent upstream is not;
- a kept-alive connection the server closed while it sat idle is never used: the pool drops connections
  idle for ``IDLE_S`` (below the common 5 s server keep-alive) and checks the socket before reusing one;
  only a GET is sent again when a reused connection still turns out dead, never a POST (the model may
  already be generating for it);
- memory is bounded: whole answers, error bodies, stream lines and the read-ahead of a slow reader;
- leaving a stream early closes its connection, which is how the model server learns to stop generating;
- ``https://`` base URLs use TLS with the system's certificate store; no proxy variables are read.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, cast
from urllib.parse import quote, urlsplit

import httptools

from autotune_core import jsonio
from autotune_core.errors import BackendUnavailable, UpstreamError, UpstreamTimeout

#: most open connections per backend (keep-alive reuses all of them; bounded so a burst cannot exhaust fds)
POOL_LIMIT = 64
#: longest NDJSON / SSE line we buffer before calling the stream broken (bounded memory)
MAX_LINE_BYTES = 16 * 1024 * 1024
#: most bytes of an error body we read (the message is cut to 500 characters anyway)
MAX_ERROR_BYTES = 64 * 1024
#: most bytes of a whole (non-streamed) answer: far above any chat answer, bounded against a broken upstream
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
#: a pooled connection idle longer than this is closed rather than reused: below the 5 s after which uvicorn and
#: llama-server (cpp-httplib) drop an idle keep-alive, so we never write into one they are closing
IDLE_S = 4.0
#: bytes read ahead of a slow stream reader before the socket stops being read (the upstream then waits)
READ_AHEAD_BYTES = 256 * 1024
#: a reused connection that closes this soon after the request, with no byte back, was already dead
STALE_WINDOW_S = 1.0
#: methods sent again on a fresh connection when a reused one was dead (the idempotent ones we use)
RETRIED_METHODS = frozenset({"GET"})


class _Stale(UpstreamError):
    """A reused keep-alive connection that closed with no byte back: the server was closing it, or it read the
    request and died; only an idempotent request may be sent again."""


def _readable(fd: int) -> bool:
    """Whether an idle socket has something to read: the server's close (EOF) or bytes nobody asked for."""
    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
            return bool(poller.poll(0))
        return bool(select.select([fd], [], [], 0)[0])
    except (OSError, ValueError):
        return True  # cannot tell: treat it as dead (a fresh connection costs far less than a failed request)


class _Connection(asyncio.Protocol):
    """One keep-alive connection and the exchange running on it (at most one at a time)."""

    __slots__ = (
        "_loop",
        "_pool",
        "_timer",
        "_waiter",
        "active",
        "buffered",
        "chunks",
        "closed",
        "complete",
        "delimited",
        "error",
        "fd",
        "got_bytes",
        "headers_done",
        "idle_since",
        "keep_alive",
        "last_read",
        "limit",
        "parser",
        "paused",
        "received",
        "reused",
        "sent_at",
        "status",
        "transport",
    )

    def __init__(self, pool: _Pool) -> None:
        self._pool = pool
        self._loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.fd = -1
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.active = False
        self._clear()

    def _clear(self) -> None:
        self.status = 0
        self.headers_done = self.complete = self.keep_alive = self.delimited = self.got_bytes = False
        self.paused = False
        self.chunks: list[bytes] = []
        self.buffered = self.received = 0
        self.limit: int | None = None
        self.error: UpstreamError | None = None
        self.sent_at = self.last_read = 0.0

    # -- the exchange -------------------------------------------------------------------------------------
    def begin(self, request: bytes, limit: int | None) -> None:
        """Send a request (one write) and start the silence timer."""
        self._clear()
        self.active = True
        self.limit = limit
        self.sent_at = self.last_read = self._loop.time()
        assert self.transport is not None
        self.transport.write(request)
        self._timer = self._loop.call_later(self._pool.client.timeout, self._check_silence)

    def end(self) -> None:
        self.active = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        if self.active and not self.complete:  # someone may be waiting on this exchange: tell them why it ends
            client = self._pool.client
            self._fail(UpstreamError(f"{client.label} at {client.base_url}: the client was closed"))
        self.end()
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                try:
                    self.transport.close()
                except RuntimeError:  # its loop is gone (a library user's earlier asyncio.run): close the socket
                    sock = getattr(self.transport, "_sock", None)
                    if sock is not None:
                        with contextlib.suppress(OSError):
                            sock.close()
        self._pool.forget(self)

    def dead(self) -> bool:
        """Closed, closing, or readable while idle (the server's close is in, the loop has not seen it yet)."""
        return self.closed or self.transport is None or self.transport.is_closing() or _readable(self.fd)

    async def until_headers(self) -> None:
        while not self.headers_done:
            if self.error is not None:
                raise self.error
            await self._wait()

    async def until_complete(self) -> None:
        while True:
            if self.error is not None:  # first: a refused oversized answer may still parse to its end
                raise self.error
            if self.complete:
                return
            await self._wait()

    async def read_some(self) -> bytes:
        """The body bytes that arrived since the last call (waiting for some); b"" at the end."""
        while not self.chunks:
            if self.error is not None:
                raise self.error
            if self.complete:
                return b""
            await self._wait()
        return self.take()

    def take(self) -> bytes:
        chunks = self.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.chunks = []
        self.buffered = 0
        if self.paused and not self.closed and self.transport is not None:
            self.paused = False
            self.last_read = self._loop.time()  # the silence is measured from now, not from before the pause
            self.transport.resume_reading()
        return data

    async def _wait(self) -> None:
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    def _check_silence(self) -> None:
        self._timer = None
        if not self.active or self.complete or self.error is not None:
            return
        timeout = self._pool.client.timeout
        left = timeout if self.paused else self.last_read + timeout - self._loop.time()
        if left > 0:
            self._timer = self._loop.call_later(left, self._check_silence)
            return
        client = self._pool.client
        self._fail(UpstreamTimeout(f"{client.label} at {client.base_url} timed out (no answer in {timeout:g} s)"))
        self.close()

    # -- asyncio.Protocol ---------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        if self.closed:  # its pool was closed while it connected
            self.transport.close()
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            self.fd = sock.fileno()
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if not self.active:  # bytes nobody asked for: the connection's state is unknown, drop it
            self.close()
            return
        self.got_bytes = True
        self.last_read = self._loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            client = self._pool.client
            self._fail(UpstreamError(f"{client.label} at {client.base_url} sent a malformed answer: {exc}"))
            self.close()

    def eof_received(self) -> bool | None:
        return None  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.active and not self.complete:
            if exc is None and self.headers_done and not self.delimited:  # a body that ends with a clean close
                self.complete = True
                self._wake()
            else:
                self._fail(self._lost_error(exc))
        self.end()
        self._pool.forget(self)

    def _lost_error(self, exc: Exception | None) -> UpstreamError:
        client = self._pool.client
        reason = f"{type(exc).__name__}: {exc}" if exc is not None else "the connection closed"
        if self.headers_done:
            reason += " before the answer was complete"
        message = f"{client.label} at {client.base_url} failed: {reason}"
        if self.reused and not self.got_bytes and self._loop.time() - self.sent_at < STALE_WINDOW_S:
            return _Stale(message)
        return UpstreamError(message)

    # -- httptools callbacks ------------------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"content-length" or lowered == b"transfer-encoding":
            self.delimited = True

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if self.status >= 200:  # an interim 1xx answer is followed by the real one
            self.headers_done = True
            self._wake()

    def on_body(self, body: bytes) -> None:
        self.received += len(body)
        if self.limit is not None and self.received > self.limit:
            client = self._pool.client
            self._fail(UpstreamError(f"{client.label} sent an answer larger than {self.limit} bytes"))
            self.close()
            return
        self.chunks.append(body)
        self.buffered += len(body)
        if self.limit is None and self.buffered > READ_AHEAD_BYTES and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self.headers_done:  # the end of an interim 1xx answer
            self.delimited = False
            return
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()
        self._wake()


class _Pool:
    """The keep-alive connections of one client on one event loop, at most ``limit`` open.

    Waiting for a free connection is a plain future per waiter with our own timer (not ``asyncio.wait_for``,
    which on 3.11 can swallow a cancellation and on 3.12 can drop a result handed over as it times out: a
    leaked connection or a request sent for a client that left). A handed-over connection or wake-up that
    arrives as its waiter gives up is passed on to the next one.
    """

    def __init__(self, client: UpstreamClient, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.loop = loop
        self.idle: list[_Connection] = []
        self.open: set[_Connection] = set()
        self.closed = False
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()

    async def acquire(self, fresh: bool = False) -> _Connection:
        deadline = self.loop.time() + self.client.timeout
        while True:
            if not fresh:  # every pass: a connection may have gone idle while we waited for a turn
                conn = self._idle_connection()
                if conn is not None:
                    return conn
            if self.closed:
                raise self._closed_error()
            if len(self.open) < self.client.limit:
                return await self._connect()
            handed = await self._wait_for_turn(deadline)
            if handed is not None:
                if not handed.dead():
                    return handed
                handed.close()

    def _idle_connection(self) -> _Connection | None:
        now = self.loop.time()
        while self.idle:
            conn = self.idle.pop()
            if conn.closed:
                continue
            if now - conn.idle_since > IDLE_S or conn.dead():  # old, or the server closed it already
                conn.close()
                continue
            conn.reused = True
            return conn
        return None

    def _closed_error(self) -> BackendUnavailable:
        return BackendUnavailable(f"{self.client.label} at {self.client.base_url}: the client was closed")

    async def _wait_for_turn(self, deadline: float) -> _Connection | None:
        if self.closed:
            raise self._closed_error()
        client = self.client
        waiter: asyncio.Future[_Connection | None] = self.loop.create_future()
        self._waiters.append(waiter)

        def expire() -> None:
            if not waiter.done():
                busy = f"all {client.limit} connections busy"
                waiter.set_exception(UpstreamTimeout(f"{client.label} at {client.base_url} timed out ({busy})"))

        timer = self.loop.call_at(deadline, expire)
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                handed = waiter.result()  # handed to us as we gave up: pass it on
                if handed is not None:
                    self.release(handed)
                else:
                    self._wake_one()
            raise
        finally:
            timer.cancel()
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _wake_one(self, conn: _Connection | None = None) -> bool:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    async def _connect(self) -> _Connection:
        client = self.client
        conn = _Connection(self)
        self.open.add(conn)
        try:
            async with asyncio.timeout(min(5.0, client.timeout)):  # unlike wait_for, never swallows a cancel
                await self.loop.create_connection(
                    lambda: conn,
                    client.host,
                    client.port,
                    ssl=client.tls(),
                    server_hostname=client.host if client.scheme == "https" else None,
                )
        except BaseException as exc:
            conn.close()
            if isinstance(exc, TimeoutError):
                raise UpstreamTimeout(f"{client.label} at {client.base_url} timed out (connecting)") from exc
            if isinstance(exc, OSError):  # refused, unreachable, unknown host, a TLS handshake that failed
                raise BackendUnavailable(f"{client.label} at {client.base_url} is not reachable: {exc}") from exc
            raise
        if conn.closed or self.closed:  # the pool was closed while we connected
            conn.close()
            raise self._closed_error()
        return conn

    def release(self, conn: _Connection) -> None:
        """The exchange on ``conn`` is over: keep the connection if it can carry another, else close it."""
        conn.end()
        if self.closed or conn.closed or not conn.complete or not conn.keep_alive or conn.error is not None:
            conn.close()
            return
        conn.chunks = []
        if conn.paused and conn.transport is not None:
            conn.paused = False
            conn.transport.resume_reading()
        conn.reused = True
        if self._wake_one(conn):
            return
        conn.idle_since = self.loop.time()
        self.idle.append(conn)

    def forget(self, conn: _Connection) -> None:
        """``conn`` is closed: its place may be taken by a waiter's new connection."""
        if conn in self.open:
            self.open.discard(conn)
            self._wake_one()

    def drop_idle(self) -> None:
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()

    def close(self) -> None:
        """Close every connection and turn away every waiter (a closed pool never opens another)."""
        self.closed = True
        error = self._closed_error()
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if not waiter.done():
                with contextlib.suppress(RuntimeError):  # its loop is gone (a library user's earlier asyncio.run)
                    waiter.set_exception(error)
        self.idle = []
        for conn in list(self.open):
            conn.close()


class UpstreamResponse:
    """A complete answer: status and body bytes."""

    __slots__ = ("content", "status_code")

    def __init__(self, status_code: int, content: bytes) -> None:
        self.status_code = status_code
        self.content = content

    def json(self) -> Any:
        return jsonio.loads(self.content, constants=True)


class StreamingResponse:
    """An answer being read as it arrives; transport failures surface as the core's typed errors."""

    def __init__(self, client: UpstreamClient, conn: _Connection) -> None:
        self._client = client
        self._conn = conn
        self.status_code = conn.status
        self.content = b""

    async def aread(self, limit: int = MAX_ERROR_BYTES) -> bytes:
        """The body, at most ``limit`` bytes (error bodies only need their message)."""
        parts: list[bytes] = []
        size = 0
        while size < limit:
            data = await self._conn.read_some()
            if not data:
                break
            parts.append(data)
            size += len(data)
        self.content = b"".join(parts)[:limit]
        return self.content

    async def aiter_lines(self) -> AsyncIterator[str]:
        """Lines split on ``\n`` (``\r\n`` tolerated), as they arrive; a trailing partial line is yielded."""
        partial: list[bytes] = []  # the pieces of a line still open (joined once, not grown byte by byte)
        size = 0
        while data := await self._conn.read_some():
            if b"\n" not in data:
                partial.append(data)
                size += len(data)
                if size > MAX_LINE_BYTES:
                    raise UpstreamError(f"{self._client.label} sent a line longer than {MAX_LINE_BYTES} bytes")
                continue
            if partial:
                partial.append(data)
                data = b"".join(partial)
            *lines, rest = data.split(b"\n")
            for line in lines:
                yield line.rstrip(b"\r").decode("utf-8", "replace")
            partial, size = ([rest], len(rest)) if rest else ([], 0)
        if partial:
            yield b"".join(partial).rstrip(b"\r").decode("utf-8", "replace")


class _Stream:
    """``async with client.stream(...) as response``: leaving early closes the connection, which is how the
    upstream learns the client went away and stops generating."""

    def __init__(self, client: UpstreamClient, method: str, path: str, body: bytes | None) -> None:
        self._client, self._method, self._path, self._body = client, method, path, body
        self._conn: _Connection | None = None

    async def __aenter__(self) -> StreamingResponse:
        self._conn = await self._client.send(self._method, self._path, self._body, limit=None)
        return StreamingResponse(self._client, self._conn)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._conn is not None:
            self._conn._pool.release(self._conn)  # finished: back to the pool; unfinished: closed


class UpstreamClient:
    """One pooled keep-alive client per backend instance, with bounded timeouts everywhere."""

    def __init__(
        self,
        base_url: str,
        timeout: float,
        headers: dict[str, str] | None = None,
        label: str = "upstream",
        limit: int = POOL_LIMIT,
    ) -> None:
        self.timeout = timeout
        self.headers = dict(headers or {})
        self.label = label
        self.limit = limit
        self._pool: _Pool | None = None
        self._tls: ssl.SSLContext | None = None
        self.base_url = base_url

    @property
    def base_url(self) -> str:
        return self._base_url

    @base_url.setter
    def base_url(self, value: str) -> None:
        """Parse once what every request needs: where to connect and the fixed part of the request head.

        ``host:port`` without a scheme means http (as Ollama's own OLLAMA_HOST does); a URL we cannot use
        is reported by every request (a 502 naming the setting), not raised while a backend is built."""
        self._base_url = value.rstrip("/")
        self.invalid: str | None = None
        parts = urlsplit(self._base_url if "://" in self._base_url else "http://" + self._base_url)
        try:
            port = parts.port
        except ValueError as exc:
            port, self.invalid = None, str(exc)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self.invalid = "expected an http:// or https:// URL"
        self.scheme = parts.scheme
        self.host = parts.hostname or ""
        self.port = port or (443 if parts.scheme == "https" else 80)
        self._prefix = parts.path.rstrip("/")
        fixed = {"Host": parts.netloc.rpartition("@")[2], "User-Agent": "autotune", **self.headers}
        for name, text in fixed.items():
            if any(c in name + text for c in "\r\n\0"):
                raise ValueError(f"{self.label}: header {name!r} contains a line break")
        self._head = "".join(f"{name}: {text}\r\n" for name, text in fixed.items()).encode("latin-1")
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def tls(self) -> ssl.SSLContext | None:
        if self.scheme != "https":
            return None
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    def _current_pool(self) -> _Pool:
        """The pool of the running loop (connections belong to the loop that made them; library users may
        call us from successive ``asyncio.run``s)."""
        loop = asyncio.get_running_loop()
        pool = self._pool
        if pool is None or pool.loop is not loop:
            if pool is not None:
                pool.close()
            pool = self._pool = _Pool(self, loop)
        return pool

    def _request_head(self, method: str, path: str, body: bytes | None) -> bytes:
        target = self._prefix + path
        if not target.isascii():
            target = quote(target, safe="/:?=&%@+,;!$'()*~")
        if body is None:
            return b"%s %s HTTP/1.1\r\n%s\r\n" % (method.encode(), target.encode(), self._head)
        return b"%s %s HTTP/1.1\r\n%sContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
            method.encode(),
            target.encode(),
            self._head,
            len(body),
            body,
        )

    async def send(self, method: str, path: str, body: bytes | None, limit: int | None) -> _Connection:
        """Send a request and return once the status line and headers are in (body unread)."""
        if self.invalid is not None:
            raise BackendUnavailable(f"{self.label} at {self.base_url!r} is not reachable: {self.invalid}")
        request = self._request_head(method, path, body)
        pool = self._current_pool()
        conn = await pool.acquire()
        for attempt in (1, 2):
            conn.begin(request, limit)
            try:
                await conn.until_headers()
            except _Stale:
                conn.close()
                if attempt == 2 or method not in RETRIED_METHODS:
                    raise
                pool.drop_idle()  # the server restarted or timed them all out: none of them is alive either
                conn = await pool.acquire(fresh=True)
                continue
            except BaseException:
                conn.close()
                raise
            break
        return conn

    async def request(self, method: str, path: str, *, json: Any = None) -> UpstreamResponse:
        """A whole request and answer; the body is read completely (at most ``MAX_RESPONSE_BYTES``)."""
        body = jsonio.dumps(json) if json is not None else None
        conn = await self.send(method, path, body, MAX_RESPONSE_BYTES)
        try:
            await conn.until_complete()
            response = UpstreamResponse(conn.status, conn.take() if conn.chunks else b"")
        finally:
            conn._pool.release(conn)
        return response

    def stream(self, method: str, path: str, *, json: Any = None) -> _Stream:
        """``async with client.stream("POST", path, json=body) as response: async for line in ...``."""
        return _Stream(self, method, path, jsonio.dumps(json) if json is not None else None)

    async def get_json(self, path: str) -> Any:
        """A probe: the JSON of a 200 answer, else None (never raises for transport or parse failures)."""
        try:
            response = await self.request("GET", path)
            return response.json() if response.status_code == 200 else None
        except (UpstreamError, ValueError):
            return None

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    async def __aenter__(self) -> UpstreamClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
