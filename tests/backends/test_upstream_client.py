"""The backends' upstream client: failures become the core's typed errors, lines arrive whole,
memory stays bounded, leaving a stream early hangs up, and a session never outlives its event loop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest

from autotune_core.errors import BackendUnavailable, UpstreamError, UpstreamTimeout
from autotune_plugins.backends import _http
from autotune_plugins.backends._http import UpstreamClient

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve(handler: Handler) -> tuple[asyncio.Server, str]:
    async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(wrapped, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def read_exchange(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request: its head and its body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length) if length else b""


async def read_request(reader: asyncio.StreamReader) -> bytes:
    return (await read_exchange(reader))[1]


def chunked_head() -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_refused_is_backend_unavailable() -> None:
    async with UpstreamClient(f"http://127.0.0.1:{free_port()}", 2.0, label="Ollama") as client:
        with pytest.raises(BackendUnavailable, match=r"Ollama at http://127\.0\.0\.1:\d+ is not reachable"):
            await client.request("GET", "/api/version")
        assert await client.get_json("/api/version") is None  # probes never raise


async def test_a_silent_upstream_times_out() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(2)

    server, url = await serve(silent)
    async with server, UpstreamClient(url, 0.2) as client:
        with pytest.raises(UpstreamTimeout, match="timed out"):
            await client.request("POST", "/api/chat", json={"model": "m"})


async def test_lines_arrive_whole_across_chunks_and_crlf() -> None:
    async def split(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert await read_request(reader) == b'{"stream":true}'  # compact JSON (jsonio.dumps)
        writer.write(chunked_head())
        for piece in (b'{"a": 1}\r\n{"b"', b": 2}\n", b"\n", b'{"c": 3}'):  # the last line has no newline
            writer.write(chunk(piece))
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    server, url = await serve(split)
    async with (
        server,
        UpstreamClient(url, 2.0) as client,
        client.stream("POST", "/api/chat", json={"stream": True}) as response,
    ):
        assert response.status_code == 200
        lines = [line async for line in response.aiter_lines()]
    assert lines == ['{"a": 1}', '{"b": 2}', "", '{"c": 3}']


async def test_an_endless_line_is_refused_not_buffered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_http, "MAX_LINE_BYTES", 1000)

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(chunked_head())
        for _ in range(20):
            writer.write(chunk(b"x" * 200))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    server, url = await serve(endless)
    async with (
        server,
        UpstreamClient(url, 2.0, label="Ollama") as client,
        client.stream("POST", "/api/chat", json={}) as response,
    ):
        with pytest.raises(UpstreamError, match="longer than 1000 bytes"):
            async for _ in response.aiter_lines():
                pass


async def test_upstream_dying_mid_stream_is_an_upstream_error() -> None:
    async def dies(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(chunked_head() + chunk(b'{"a": 1}\n'))
        await writer.drain()
        writer.transport.abort()

    server, url = await serve(dies)
    async with (
        server,
        UpstreamClient(url, 2.0, label="Ollama") as client,
        client.stream("POST", "/api/chat", json={}) as response,
    ):
        seen = []
        with pytest.raises(UpstreamError, match=r"Ollama at .* failed"):
            async for line in response.aiter_lines():
                seen.append(line)
    assert seen == ['{"a": 1}']


async def test_leaving_a_stream_early_hangs_up() -> None:
    """That is how the model server learns the client went away and stops generating."""
    hung_up = asyncio.Event()

    async def generating(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(chunked_head() + chunk(b'{"n": 0}\n'))
        await writer.drain()
        await asyncio.wait_for(reader.read(), 5)  # b"" once the client closes its end
        hung_up.set()

    server, url = await serve(generating)
    async with server, UpstreamClient(url, 2.0) as client:
        async with client.stream("POST", "/api/chat", json={}) as response:
            async for line in response.aiter_lines():
                assert line == '{"n": 0}'
                break
        await asyncio.wait_for(hung_up.wait(), 5)


async def test_error_bodies_are_read_bounded() -> None:
    async def failing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        payload = b'{"error": "' + b"e" * 200_000 + b'"}'
        writer.write(b"HTTP/1.1 500 Oops\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload))
        await writer.drain()

    server, url = await serve(failing)
    async with server, UpstreamClient(url, 2.0) as client, client.stream("POST", "/api/chat", json={}) as response:
        assert response.status_code == 500
        assert len(await response.aread()) == _http.MAX_ERROR_BYTES


def test_a_client_outlives_its_event_loop() -> None:
    """Library users may call through the same backend from successive asyncio.run()s."""

    async def ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n{"ok": true}')
            await writer.drain()

    client = UpstreamClient("http://127.0.0.1:1", 2.0)

    async def once() -> object:
        server, url = await serve(ok)
        async with server:
            client.base_url = url
            return (await client.request("GET", "/")).json()

    assert asyncio.run(once()) == {"ok": True}
    assert asyncio.run(once()) == {"ok": True}  # a fresh session on the new loop, not the dead one
    asyncio.run(client.aclose())


@pytest.mark.parametrize("declared", [True, False])
async def test_an_oversized_answer_is_refused(monkeypatch: pytest.MonkeyPatch, declared: bool) -> None:
    monkeypatch.setattr(_http, "MAX_RESPONSE_BYTES", 10_000)

    async def huge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        if declared:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 50000\r\n\r\n" + b"x" * 50_000)
        else:
            writer.write(chunked_head() + b"".join(chunk(b"x" * 5_000) for _ in range(10)) + b"0\r\n\r\n")
        await writer.drain()

    server, url = await serve(huge)
    async with server, UpstreamClient(url, 2.0, label="Ollama") as client:
        with pytest.raises(UpstreamError, match="larger than 10000 bytes"):
            await client.request("POST", "/api/chat", json={})
