"""The wire between the server and its llama.cpp worker process: length-prefixed frames on a socketpair.

Why this shape: a token is the hot path (one frame each), so it travels as a fixed binary header plus the
UTF-8 text (no JSON); everything else (load, done, errors, tokenize, embeddings, stats) is rare and is one
JSON object. A frame is ``!I`` (payload length) then the payload, whose first byte says which kind it is:

- ``J`` + JSON object: a command (``{"op": ...}``, server → worker) or an event (``{"ev": ...}``, back);
- ``T`` + ``!Id`` (request id, ``time.perf_counter()`` when the worker produced it) + text: one token.

``perf_counter`` is CLOCK_MONOTONIC on Linux, shared by both processes, so the server can measure how long a
token took to cross the boundary.
"""

from __future__ import annotations

import json
import struct
from typing import Any

HEADER = struct.Struct("!I")
TOKEN = struct.Struct("!Id")
JSON_KIND = b"J"
TOKEN_KIND = b"T"
#: the largest frame either side accepts (a long prompt's messages are the biggest thing sent)
MAX_FRAME = 256 * 1024 * 1024


def json_frame(message: dict[str, Any]) -> bytes:
    payload = JSON_KIND + json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return HEADER.pack(len(payload)) + payload


def token_frame(request_id: int, text: str, produced: float) -> bytes:
    body = text.encode("utf-8")
    return HEADER.pack(TOKEN.size + 1 + len(body)) + TOKEN_KIND + TOKEN.pack(request_id, produced) + body


class ProtocolError(Exception):
    """A frame that neither side could have sent (a bug or a corrupted stream): the worker is restarted."""


Frame = tuple[str, Any]  # ("json", dict) or ("token", (request_id, produced, text))


def decode(payload: bytes | memoryview) -> Frame:
    kind = bytes(payload[:1])
    if kind == TOKEN_KIND:
        request_id, produced = TOKEN.unpack_from(payload, 1)
        return "token", (request_id, produced, bytes(payload[1 + TOKEN.size :]).decode("utf-8", "replace"))
    if kind == JSON_KIND:
        message = json.loads(bytes(payload[1:]))
        if not isinstance(message, dict):
            raise ProtocolError("a JSON frame must hold an object")
        return "json", message
    raise ProtocolError(f"unknown frame kind {kind!r}")


class FrameBuffer:
    """Bytes in, whole frames out (a frame may arrive in pieces, several may arrive at once)."""

    def __init__(self) -> None:
        self._data = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._data += data
        frames: list[Frame] = []
        view = self._data
        start = 0
        while len(view) - start >= HEADER.size:
            (size,) = HEADER.unpack_from(view, start)
            if size > MAX_FRAME or size < 1:
                raise ProtocolError(f"bad frame length {size}")
            end = start + HEADER.size + size
            if len(view) < end:
                break
            frames.append(decode(bytes(view[start + HEADER.size : end])))
            start = end
        if start:
            del self._data[:start]
        return frames


def read_frame(sock: Any) -> Frame | None:
    """One frame from a blocking socket (the worker's side); None at end of stream."""
    header = _read_exact(sock, HEADER.size)
    if header is None:
        return None
    (size,) = HEADER.unpack(header)
    if size > MAX_FRAME or size < 1:
        raise ProtocolError(f"bad frame length {size}")
    payload = _read_exact(sock, size)
    if payload is None:
        return None
    return decode(payload)


def _read_exact(sock: Any, size: int) -> bytes | None:
    chunks: list[bytes] = []
    left = size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
