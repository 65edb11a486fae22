"""Request and response values passed between the HTTP loop and the route handlers.

Handlers return one of :class:`Response`, :class:`StreamResponse`, :class:`Hang` or :class:`Drop`;
:mod:`fakes.httpd` turns it into bytes on the socket.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BadJSON",
    "Drop",
    "Handler",
    "Hang",
    "RecordedRequest",
    "Request",
    "Response",
    "StreamResponse",
    "dumps",
    "json_response",
]


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
