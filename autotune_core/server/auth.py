"""Optional API key: ``Authorization: Bearer <key>``, compared in constant time.

Pure ASGI (no per-request task or body buffering). ``/health`` stays reachable without a key but
then answers only ``{"status": ...}``; everything else, plugin routes included, needs the key.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import Unauthorized, door_for_path, dumps, error_body, error_headers

#: paths answered without a key (health is then minimal)
OPEN_PATHS = frozenset({"/health", "/"})


def authorized(header: bytes | None, key: bytes) -> bool:
    if not header:
        return False
    scheme, _, token = header.partition(b" ")
    if scheme.lower() != b"bearer":
        return False
    return hmac.compare_digest(token.strip(), key)


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.key = api_key.encode("utf-8")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value
                break
        ok = authorized(header, self.key)
        scope.setdefault("state", {})["autotune_authorized"] = ok
        path: str = scope["path"]
        if ok or path in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        error = Unauthorized(
            "missing or invalid API key; send 'Authorization: Bearer <key>'"
            if header
            else "missing API key; send 'Authorization: Bearer <key>'"
        )
        body = dumps(error_body(door_for_path(path), error))
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in error_headers(error).items()]
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
