"""(shared, not a plugin) The upstream HTTP client of the network backends, on aiohttp.

Why aiohttp and not httpx here: every proxied request makes one upstream call, and at concurrency 32 on
loopback httpx's connection pool served ~700 requests/s where aiohttp served ~9,400 (p50 0.72 ms versus
0.20 ms per call; measured side by side, see docs/benchmarks.md "Proxy overhead"). httpx stays for the cold
paths (CLI, ``start()``, archetype downloads).

The client maps every transport failure to the core's typed errors (timeout → ``UpstreamTimeout``, refused
→ ``BackendUnavailable``, anything else → ``UpstreamError``), so a backend never sees an aiohttp exception.
aiohttp is imported on first use: listing plugins should not pay for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from autotune_core import jsonio
from autotune_core.errors import BackendUnavailable, UpstreamError, UpstreamTimeout

if TYPE_CHECKING:
    import aiohttp

#: most pooled connections per backend (keep-alive reuses all of them; bounded so a burst cannot exhaust fds)
POOL_LIMIT = 64
#: longest NDJSON / SSE line we buffer before calling the stream broken (bounded memory)
MAX_LINE_BYTES = 16 * 1024 * 1024
#: most bytes of an error body we read (the message is cut to 500 characters anyway)
MAX_ERROR_BYTES = 64 * 1024
#: most bytes of a whole (non-streamed) answer: far above any chat answer, bounded against a broken upstream
MAX_RESPONSE_BYTES = 64 * 1024 * 1024


def _transport_errors() -> tuple[type[BaseException], ...]:
    """What a failed exchange raises: aiohttp's errors (imported lazily), socket errors and timeouts."""
    import aiohttp

    return (aiohttp.ClientError, OSError, TimeoutError)


class UpstreamResponse:
    """A complete answer: status and body bytes."""

    __slots__ = ("content", "status_code")

    def __init__(self, status_code: int, content: bytes) -> None:
        self.status_code = status_code
        self.content = content

    def json(self) -> Any:
        return jsonio.loads(self.content, constants=True)


class StreamingResponse:
    """An answer being read line by line; transport failures surface as the core's typed errors."""

    def __init__(self, client: UpstreamClient, response: aiohttp.ClientResponse) -> None:
        self._client = client
        self._response = response
        self.status_code = response.status
        self.content = b""

    async def aread(self, limit: int = MAX_ERROR_BYTES) -> bytes:
        """The body, at most ``limit`` bytes (error bodies only need their message)."""
        parts: list[bytes] = []
        size = 0
        try:
            while size < limit:
                data = await self._response.content.read(limit - size)
                if not data:
                    break
                parts.append(data)
                size += len(data)
        except _transport_errors() as exc:
            raise self._client.mapped(exc) from exc
        self.content = b"".join(parts)
        return self.content

    async def aiter_lines(self) -> AsyncIterator[str]:
        """Lines split on ``\\n`` (``\\r\\n`` tolerated), as they arrive; a trailing partial line is yielded."""
        pending = b""
        try:
            async for data in self._response.content.iter_any():
                pending += data
                if b"\n" not in data:
                    if len(pending) > MAX_LINE_BYTES:
                        raise UpstreamError(f"{self._client.label} sent a line longer than {MAX_LINE_BYTES} bytes")
                    continue
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield line.rstrip(b"\r").decode("utf-8", "replace")
        except _transport_errors() as exc:
            raise self._client.mapped(exc) from exc
        if pending:
            yield pending.rstrip(b"\r").decode("utf-8", "replace")


class _Stream:
    """``async with client.stream(...) as response``: leaving early closes the connection, which is how the
    upstream learns the client went away and stops generating."""

    def __init__(self, client: UpstreamClient, method: str, path: str, body: bytes | None) -> None:
        self._client, self._method, self._path, self._body = client, method, path, body
        self._response: aiohttp.ClientResponse | None = None

    async def __aenter__(self) -> StreamingResponse:
        self._response = await self._client.send(self._method, self._path, self._body)
        return StreamingResponse(self._client, self._response)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._response is None:
            return
        if self._response.content.is_eof():
            self._response.release()  # finished: the connection goes back to the pool
        else:
            self._response.close()  # unfinished: drop the connection instead of returning it to the pool


class UpstreamClient:
    """One pooled keep-alive client per backend instance, with bounded timeouts everywhere.

    ``timeout`` bounds connecting (at most 5 s) and each wait for bytes, not the whole answer: a long
    generation that keeps streaming is fine, a silent upstream is not.
    """

    def __init__(
        self,
        base_url: str,
        timeout: float,
        headers: dict[str, str] | None = None,
        label: str = "upstream",
        limit: int = POOL_LIMIT,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.headers = dict(headers or {})
        self.label = label
        self.limit = limit
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _current_session(self) -> aiohttp.ClientSession:
        """The session of the running loop (a session is bound to the loop that made it; library users may
        call us from successive ``asyncio.run``s)."""
        import aiohttp

        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            connect = min(5.0, self.timeout)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.limit, limit_per_host=self.limit),
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=connect, connect=connect, sock_read=self.timeout
                ),
                headers=self.headers,
                trust_env=False,
                raise_for_status=False,
            )
            self._loop = loop
        return self._session

    def mapped(self, exc: BaseException) -> UpstreamError:
        """The core's typed error for a transport failure (the server turns each into its status code)."""
        import aiohttp

        if isinstance(exc, UpstreamError):
            return exc
        if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
            return UpstreamTimeout(f"{self.label} at {self.base_url} timed out ({type(exc).__name__})")
        if isinstance(exc, aiohttp.ClientConnectorError | ConnectionRefusedError):
            return BackendUnavailable(f"{self.label} at {self.base_url} is not reachable: {exc}")
        return UpstreamError(f"{self.label} at {self.base_url} failed: {type(exc).__name__}: {exc}")

    async def send(self, method: str, path: str, body: bytes | None) -> aiohttp.ClientResponse:
        """Send a request and return once the status line and headers are in (body unread)."""
        headers = {"Content-Type": "application/json"} if body is not None else None
        try:
            return await self._current_session().request(
                method, self.base_url + path, data=body, headers=headers, allow_redirects=False
            )
        except _transport_errors() as exc:
            raise self.mapped(exc) from exc

    async def request(self, method: str, path: str, *, json: Any = None) -> UpstreamResponse:
        """A whole request and answer; the body is read completely."""
        body = jsonio.dumps(json) if json is not None else None
        response = await self.send(method, path, body)
        try:
            content = await self._read_bounded(response)
        except _transport_errors() as exc:
            raise self.mapped(exc) from exc
        finally:
            response.release()
        return UpstreamResponse(response.status, content)

    async def _read_bounded(self, response: aiohttp.ClientResponse) -> bytes:
        declared = response.content_length
        if declared is not None and declared <= MAX_RESPONSE_BYTES:
            return await response.read()  # the common case: one read of a known, acceptable length
        parts: list[bytes] = []
        size = 0
        async for data in response.content.iter_any():
            size += len(data)
            if size > MAX_RESPONSE_BYTES:
                response.close()
                raise UpstreamError(f"{self.label} sent an answer larger than {MAX_RESPONSE_BYTES} bytes")
            parts.append(data)
        return b"".join(parts)

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
        session, self._session = self._session, None
        if session is not None and not session.closed and self._loop is asyncio.get_running_loop():
            await session.close()

    async def __aenter__(self) -> UpstreamClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
