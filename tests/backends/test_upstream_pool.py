"""The upstream client's connections: keep-alive reuse, the stale-connection retry (and where it must not
happen), bodies that end with the connection, the pool bound, a bounded read-ahead, hang-ups, malformed
answers, a base path and headers, TLS, and uvloop (the server's loop)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from test_upstream_client import Handler, chunk, chunked_head, read_exchange, read_request, serve

from autotune_core.errors import BackendUnavailable, UpstreamError, UpstreamTimeout
from autotune_plugins.backends import _http
from autotune_plugins.backends._http import UpstreamClient

OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{"ok": true}'


class Counter:
    def __init__(self) -> None:
        self.connections = 0
        self.open = 0
        self.most_open = 0


def keep_alive_server(counter: Counter, answer: bytes = OK, delay: float = 0.0) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        counter.connections += 1
        counter.open += 1
        counter.most_open = max(counter.most_open, counter.open)
        try:
            for _ in range(100):
                try:
                    await read_request(reader)
                except asyncio.IncompleteReadError:
                    return
                if delay:
                    await asyncio.sleep(delay)
                writer.write(answer)
                await writer.drain()
        finally:
            counter.open -= 1

    return handler


async def test_sequential_requests_share_one_kept_alive_connection() -> None:
    counter = Counter()
    server, url = await serve(keep_alive_server(counter))
    async with server, UpstreamClient(url, 2.0) as client:
        for _ in range(5):
            assert (await client.request("POST", "/api/chat", json={"n": 1})).json() == {"ok": True}
    assert counter.connections == 1


async def read_method(reader: asyncio.StreamReader) -> bytes:
    return (await read_exchange(reader))[0].split(b" ")[0]


def line_then_silence(line: bytes, seconds: float) -> Handler:
    """Start a streamed answer with one line, then say nothing for ``seconds``."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(chunked_head() + chunk(line))
        await writer.drain()
        await asyncio.sleep(seconds)

    return handler


def trickle(line: bytes, count: int, *, end: bool) -> Handler:
    """A streamed answer of ``count`` lines, one every 0.1 s (never silent long), ended or left open."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(chunked_head())
        for _ in range(count):
            writer.write(chunk(line))
            await writer.drain()
            await asyncio.sleep(0.1)
        if end:
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    return handler


def closes_after_one(seen: list[bytes]) -> Handler:
    """The first connection answers one request, reads the next and hangs up silently: from our side, what a
    server closing an idle keep-alive as the request crosses it looks like, or one that died reading it."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_method(reader))
        writer.write(OK)
        await writer.drain()
        if len(seen) == 1:
            seen.append(await read_method(reader))

    return handler


async def test_a_get_on_a_dead_reused_connection_is_sent_again_on_a_fresh_one() -> None:
    seen: list[bytes] = []
    server, url = await serve(closes_after_one(seen))
    async with server, UpstreamClient(url, 2.0) as client:
        await client.request("GET", "/api/tags")
        assert (await client.request("GET", "/api/tags")).json() == {"ok": True}
    assert seen == [b"GET", b"GET", b"GET"]  # the second request, sent again on a new connection


async def test_a_post_on_a_dead_reused_connection_is_never_sent_twice() -> None:
    """The server may have read it and be generating: sending it again could run the model twice."""
    seen: list[bytes] = []
    server, url = await serve(closes_after_one(seen))
    async with server, UpstreamClient(url, 2.0, label="Ollama") as client:
        await client.request("POST", "/api/chat", json={"n": 1})
        with pytest.raises(UpstreamError, match="failed: the connection closed"):
            await client.request("POST", "/api/chat", json={"n": 2})
    assert seen == [b"POST", b"POST"]


def test_a_connection_the_server_closed_while_the_loop_was_busy_is_not_reused() -> None:
    """The close is in the kernel but the event loop has not seen it yet: the socket check before reuse
    catches it, so the request goes out once, on a fresh connection."""
    requests: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve_two_connections() -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            with conn:
                requests.append(conn.recv(65536))
                conn.sendall(OK)  # then close at once: a server dropping the kept-alive connection

    thread = threading.Thread(target=serve_two_connections, daemon=True)
    thread.start()

    async def main() -> list[Any]:
        async with UpstreamClient(f"http://127.0.0.1:{port}", 2.0) as client:
            first = (await client.request("POST", "/api/chat", json={"n": 1})).json()
            time.sleep(0.3)  # the loop is busy elsewhere while the server's FIN arrives
            return [first, (await client.request("POST", "/api/chat", json={"n": 2})).json()]

    try:
        assert asyncio.run(main()) == [{"ok": True}] * 2
    finally:
        listener.close()
        thread.join(5)
    assert len(requests) == 2 and requests[1].endswith(b'{"n":2}')


async def test_a_fresh_connection_closed_without_an_answer_is_an_error_not_a_retry() -> None:
    attempts = 0

    async def hangs_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal attempts
        attempts += 1
        await read_request(reader)

    server, url = await serve(hangs_up)
    async with server, UpstreamClient(url, 2.0, label="Ollama") as client:
        with pytest.raises(UpstreamError, match=r"Ollama at .* failed: the connection closed"):
            await client.request("POST", "/api/chat", json={})
    assert attempts == 1  # the model may have seen it: never sent twice


async def test_a_reused_connection_dying_mid_answer_is_not_retried() -> None:
    attempts = 0

    async def dies_on_the_second(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal attempts
        await read_request(reader)
        writer.write(OK)
        await writer.drain()
        await read_request(reader)
        attempts += 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{")  # headers and a byte, then gone
        await writer.drain()

    server, url = await serve(dies_on_the_second)
    async with server, UpstreamClient(url, 2.0) as client:
        await client.request("POST", "/api/chat", json={})
        with pytest.raises(UpstreamError, match="before the answer was complete"):
            await client.request("POST", "/api/chat", json={})
    assert attempts == 1


async def test_a_body_that_ends_with_the_connection_is_complete() -> None:
    async def http10(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b'HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{"old": "style"}')
        await writer.drain()

    server, url = await serve(http10)
    async with server, UpstreamClient(url, 2.0) as client:
        assert (await client.request("GET", "/api/version")).json() == {"old": "style"}
        assert (await client.request("GET", "/api/version")).json() == {"old": "style"}  # a new connection


async def test_connection_close_is_honoured() -> None:
    counter = Counter()
    answer = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 12\r\n\r\n" + b'{"ok": true}'
    server, url = await serve(keep_alive_server(counter, answer))
    async with server, UpstreamClient(url, 2.0) as client:
        for _ in range(3):
            assert (await client.request("GET", "/")).status_code == 200
    assert counter.connections == 3


async def test_the_pool_never_opens_more_than_its_limit() -> None:
    counter = Counter()
    server, url = await serve(keep_alive_server(counter, delay=0.05))
    async with server, UpstreamClient(url, 2.0, limit=2) as client:
        answers = await asyncio.gather(*(client.request("POST", "/api/chat", json={}) for _ in range(7)))
    assert [a.status_code for a in answers] == [200] * 7
    assert counter.most_open == 2
    assert counter.connections == 2


async def test_waiting_for_a_busy_pool_is_bounded() -> None:
    # never silent for the client's 0.3 s, so the connection stays busy for 0.8 s
    server, url = await serve(trickle(b'{"n": 0}\n', 8, end=True))
    async with server, UpstreamClient(url, 0.3, limit=1) as client, client.stream("POST", "/", json={}) as busy:
        with pytest.raises(UpstreamTimeout, match="all 1 connections busy"):
            await client.request("POST", "/api/chat", json={})
        assert len([line async for line in busy.aiter_lines()]) == 8  # the busy one was not disturbed


async def test_a_slow_reader_bounds_what_is_read_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_http, "READ_AHEAD_BYTES", 64 * 1024)
    line = b"x" * 1023 + b"\n"

    async def firehose(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(chunked_head())
        for _ in range(64):
            writer.write(chunk(line * 64))  # 64 KB a chunk, 4 MB in all
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    server, url = await serve(firehose)
    async with server, UpstreamClient(url, 2.0) as client, client.stream("POST", "/", json={}) as response:
        await asyncio.sleep(0.3)  # the upstream could send it all by now; we must not have buffered it all
        conn = response._conn
        assert conn.buffered <= 64 * 1024 + 256 * 1024  # the read-ahead plus at most one socket read
        count = 0
        async for got in response.aiter_lines():
            assert got == line[:-1].decode()
            count += 1
    assert count == 64 * 64


async def test_a_cancelled_request_drops_its_connection() -> None:
    """A client hanging up cancels the call; its half-answered connection must never serve the next one."""
    counter = Counter()
    server, url = await serve(keep_alive_server(counter, delay=0.3))
    async with server, UpstreamClient(url, 2.0) as client:
        task = asyncio.create_task(client.request("POST", "/api/chat", json={}))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await client.request("POST", "/api/chat", json={})).json() == {"ok": True}
    assert counter.connections == 2


async def test_silence_in_the_middle_of_a_stream_times_out() -> None:
    server, url = await serve(line_then_silence(b'{"n": 0}\n', 3))
    async with server, UpstreamClient(url, 0.3) as client, client.stream("POST", "/", json={}) as response:
        lines = []
        with pytest.raises(UpstreamTimeout, match="timed out"):
            async for got in response.aiter_lines():
                lines.append(got)
    assert lines == ['{"n": 0}']


async def test_a_malformed_answer_is_an_upstream_error() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SPDY/9 what\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    server, url = await serve(garbage)
    async with server, UpstreamClient(url, 2.0, label="Ollama") as client:
        with pytest.raises(UpstreamError, match="malformed answer"):
            await client.request("GET", "/")


async def test_the_base_path_and_headers_are_sent() -> None:
    heads: list[bytes] = []

    async def records(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(OK)
        await writer.drain()

    server, url = await serve(records)
    async with server, UpstreamClient(url + "/v1/", 2.0, headers={"Authorization": "Bearer k"}) as client:
        await client.request("GET", "/models")
    lines = heads[0].decode().split("\r\n")
    assert lines[0] == "GET /v1/models HTTP/1.1"
    assert f"Host: {url.removeprefix('http://')}" in lines
    assert "Authorization: Bearer k" in lines
    assert not any(line.lower().startswith("content-length") for line in lines)  # no body, no length


def test_header_injection_is_refused() -> None:
    with pytest.raises(ValueError, match="line break"):
        UpstreamClient("http://127.0.0.1:1", 1.0, headers={"Authorization": "Bearer k\r\nX-Evil: 1"})


@pytest.mark.parametrize(
    ("url", "why"), [("unix:///tmp/sock", "http:// or https://"), ("http://127.0.0.1:99999", "out of range")]
)
async def test_an_unusable_url_is_reported_by_each_request(url: str, why: str) -> None:
    async with UpstreamClient(url, 1.0, label="Ollama") as client:
        with pytest.raises(BackendUnavailable, match=f"Ollama at '{re.escape(url)}' is not reachable: .*{why}"):
            await client.request("GET", "/api/version")
        assert await client.get_json("/api/version") is None


async def test_host_and_port_without_a_scheme_mean_http() -> None:
    counter = Counter()
    server, url = await serve(keep_alive_server(counter))
    async with server, UpstreamClient(url.removeprefix("http://"), 2.0) as client:
        assert (await client.request("GET", "/")).json() == {"ok": True}


def test_the_client_works_on_uvloop() -> None:
    """The proxy runs on uvloop, whose transports are not asyncio's classes."""
    uvloop = pytest.importorskip("uvloop")
    counter = Counter()

    async def main() -> list[object]:
        server, url = await serve(keep_alive_server(counter))
        async with server, UpstreamClient(url, 2.0) as client:
            return [(await client.request("GET", "/")).json() for _ in range(3)]

    assert uvloop.run(main()) == [{"ok": True}] * 3
    assert counter.connections == 1


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    request = "req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1"
    subprocess.run(
        ["openssl", *request.split(), "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return key, cert


async def test_https_verifies_the_certificate(self_signed: tuple[Path, Path]) -> None:
    key, cert = self_signed
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    counter = Counter()
    server = await asyncio.start_server(keep_alive_server(counter), "127.0.0.1", 0, ssl=server_tls)
    url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server:
        async with UpstreamClient(url, 2.0) as client:  # the system store does not know our certificate
            with pytest.raises(BackendUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
                await client.request("GET", "/")
        trusting = UpstreamClient(url, 2.0)
        trusting._tls = ssl.create_default_context(cafile=str(cert))
        async with trusting:
            assert [(await trusting.request("GET", "/")).json() for _ in range(2)] == [{"ok": True}] * 2
    assert counter.connections == 1  # one kept-alive connection (the refused handshake never got this far)


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_whole_answer_far_above_the_read_ahead_is_read(chunked: bool) -> None:
    """A whole answer is bounded by MAX_RESPONSE_BYTES, not paused at the stream read-ahead (``/api/show``
    with a tokenizer's vocabulary is megabytes)."""
    payload = b'{"v": "' + b"x" * 3_000_000 + b'"}'

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        if chunked:
            writer.write(
                chunked_head() + b"".join(chunk(payload[i : i + 65536]) for i in range(0, len(payload), 65536))
            )
            writer.write(b"0\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload))
        await writer.drain()
        await asyncio.sleep(2)

    server, url = await serve(big)
    async with server, UpstreamClient(url, 1.0) as client:
        response = await asyncio.wait_for(client.request("POST", "/api/show", json={}), 5)
    assert response.content == payload


async def test_the_silence_clock_restarts_when_a_slow_reader_catches_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_http, "READ_AHEAD_BYTES", 1024)

    async def burst_then_pause(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(chunked_head() + chunk(b"y" * 4095 + b"\n"))
        await writer.drain()
        await asyncio.sleep(0.9)  # silent for 0.9 s: under the 0.6 s timeout counted from when we read again?
        writer.write(chunk(b"end\n") + b"0\r\n\r\n")
        await writer.drain()

    server, url = await serve(burst_then_pause)
    async with server, UpstreamClient(url, 0.6) as client, client.stream("POST", "/", json={}) as response:
        await asyncio.sleep(0.5)  # a slow reader: the socket is paused meanwhile
        lines = []
        async for line in response.aiter_lines():
            lines.append(line)
    assert lines == ["y" * 4095, "end"]  # 0.4 s of silence after catching up: not a timeout


async def test_a_reset_in_a_close_delimited_body_is_an_error_not_an_answer() -> None:
    async def resets(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"trunc')
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
        writer.transport.abort()

    server, url = await serve(resets)
    async with server, UpstreamClient(url, 2.0) as client:
        with pytest.raises(UpstreamError, match="before the answer was complete"):
            await client.request("GET", "/")


async def test_closing_the_client_turns_its_waiters_away() -> None:
    server, url = await serve(trickle(b"{}\n", 20, end=False))
    async with server:
        client = UpstreamClient(url, 5.0, limit=1)
        async with client.stream("POST", "/", json={}):
            waiter = asyncio.create_task(client.request("POST", "/", json={}))
            await asyncio.sleep(0.05)
            pool = client._pool
            await client.aclose()
            with pytest.raises(BackendUnavailable, match="the client was closed"):
                await waiter
        assert pool is not None and not pool.open and not pool.idle


async def test_a_waiter_giving_up_as_it_is_woken_passes_the_turn_on() -> None:
    counter = Counter()
    answers, streams = keep_alive_server(counter), line_then_silence(b"{}\n", 3)

    async def first_streams(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if counter.connections == 0:
            counter.connections += 1
            await streams(reader, writer)
            return
        await answers(reader, writer)

    server, url = await serve(first_streams)
    async with server, UpstreamClient(url, 2.0, limit=1) as client:
        async with client.stream("POST", "/", json={}):
            b = asyncio.create_task(client.request("POST", "/", json={}))
            c = asyncio.create_task(client.request("POST", "/", json={}))
            await asyncio.sleep(0.05)  # both wait for the one connection
        # leaving the stream early closed its connection and woke b; b gives up before it runs
        b.cancel()
        started = time.monotonic()
        assert (await c).status_code == 200
        assert time.monotonic() - started < 1  # c got the turn at once, not after its 2 s timeout
        with pytest.raises(asyncio.CancelledError):
            await b


async def test_closing_the_client_ends_its_exchanges_in_flight() -> None:
    """A request and a stream mid-answer fail at once (not after their timeout, and never hang)."""

    server, url = await serve(line_then_silence(b"{}\n", 5))
    async with server:
        client = UpstreamClient(url, 30.0)
        whole = asyncio.create_task(client.request("POST", "/api/show", json={}))

        async def streamed() -> list[str]:
            async with client.stream("POST", "/api/chat", json={}) as response:
                return [line async for line in response.aiter_lines()]

        stream = asyncio.create_task(streamed())
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await client.aclose()
        for task in (whole, stream):
            with pytest.raises(UpstreamError, match="the client was closed"):
                await asyncio.wait_for(task, 2)
        assert time.monotonic() - started < 1


async def test_closing_the_client_while_it_connects_sends_nothing() -> None:
    heads: list[bytes] = []

    async def records(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError):
            heads.append(await reader.readuntil(b"\r\n\r\n"))

    server, url = await serve(records)
    async with server:
        client = UpstreamClient(url, 2.0)
        task = asyncio.create_task(client.request("GET", "/x"))
        for _ in range(2):
            await asyncio.sleep(0)  # the request is inside create_connection now
        pool = client._pool
        await client.aclose()
        with pytest.raises(BackendUnavailable, match="the client was closed"):
            await task
        await asyncio.sleep(0.2)
    assert heads == []  # the connection was closed unused
    assert pool is not None and not pool.open


async def test_a_woken_waiter_takes_a_connection_that_went_idle_meanwhile() -> None:
    """Its turn (a freed place) was taken by a newcomer, but another connection went idle before it ran: it
    must take that one rather than wait for a turn nobody will give."""

    async def server_side(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if b"/long" in head:
                    writer.write(chunked_head())
                    for _ in range(15):
                        writer.write(chunk(b"ab\n"))
                        await asyncio.sleep(0.2)
                    writer.write(b"0\r\n\r\n")
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    server, url = await serve(server_side)
    async with server, UpstreamClient(url, 1.0, limit=2) as client:
        done, opened = asyncio.Event(), asyncio.Event()

        async def short_then_idle() -> None:
            async with client.stream("GET", "/b") as response:
                await response.aread()
                await done.wait()  # released (to idle) only when the long one is left

        async def long_left_then_again() -> None:
            async with client.stream("GET", "/long"):
                await opened.wait()
                done.set()
            async with client.stream("GET", "/long") as response:  # takes the freed place at once
                async for _ in response.aiter_lines():
                    pass

        async def waiter() -> bytes:
            await asyncio.sleep(0.1)
            return (await client.request("GET", "/w")).content

        tasks = [asyncio.create_task(f()) for f in (short_then_idle, long_left_then_again, waiter)]
        await asyncio.sleep(0.3)
        opened.set()
        results = await asyncio.gather(*tasks)
    assert results[2] == b"ok"
