"""The HTTP/1.1 plumbing under every fake: a private asyncio loop in a background thread.

* binds 127.0.0.1 on an ephemeral port; start-up takes a few milliseconds;
* keep-alive connections, ``Content-Length`` and chunked request bodies;
* every response (head + body) goes out in ONE ``write`` on a ``TCP_NODELAY`` socket, and every streamed
  NDJSON line / SSE event is one HTTP chunk written in one ``write`` -- no Nagle / delayed-ACK stalls;
* the shared failure knobs (``hang``, ``drop_connection``, ``status_override``, mid-stream failures) are
  applied here, before and while writing.

:class:`HTTPLoop` is a mixin of :class:`fakes.server.FakeServer`, which owns the state it uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import traceback
from http import HTTPStatus
from typing import Self

from .wire import BadJSON, Drop, Hang, RecordedRequest, Request, Response, StreamResponse, json_response

__all__ = ["HTTPLoop"]


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


class HTTPLoop:
    """Start/stop the loop thread, parse requests, dispatch them to ``self._routes`` and write answers."""

    def start(self) -> Self:
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
                self._server = loop.run_until_complete(asyncio.start_server(self._serve_conn, sock=sock, limit=1 << 20))
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

    async def _one_request(self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
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
