"""The chat endpoints without Starlette's router in the way.

Why: every request used to walk the route list (the Ollama door's ``/api/chat`` is the tenth entry), then
two exception-handling wrappers, before reaching its handler: ~8 % of the proxy's time per request in the
profile (docs/benchmarks.md). The few endpoints that carry the traffic are looked up by exact method and path
instead; anything else (other paths, other methods, trailing slashes, 405s) goes on to the router as before.
Errors are the same: an exception before the response starts gets the app's error handler (and, unless it is an
``HTTPException``, is then raised on for the server to log, as Starlette's server-error middleware does); one
after it propagates.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: the request paths that carry the traffic (POST only)
HOT_PATHS: frozenset[str] = frozenset({"/v1/chat/completions", "/v1/completions", "/api/chat", "/api/generate"})

Endpoint = Callable[[Request], Awaitable[Response]]
ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]


def hot_endpoints(routes: Iterable[BaseRoute]) -> dict[str, Endpoint]:
    """``path -> endpoint`` for the hot paths, from the first route that serves each with POST (the router's
    own choice: built-in routes come before plugin routes)."""
    found: dict[str, Endpoint] = {}
    for route in routes:
        if isinstance(route, Route) and route.path in HOT_PATHS and "POST" in (route.methods or ()):
            found.setdefault(route.path, route.endpoint)
    return found


class HotRoutes:
    """Innermost middleware: POST to a hot path goes straight to its endpoint."""

    def __init__(self, app: ASGIApp, *, endpoints: dict[str, Endpoint], on_error: ErrorHandler) -> None:
        self.app = app
        self.endpoints = endpoints
        self.on_error = on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.endpoints.get(scope["path"]) if scope["type"] == "http" else None
        if endpoint is None or scope["method"] != "POST" or scope.get("root_path"):  # mounted: the router decides
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        request = Request(scope, receive, tracked)
        try:
            response = await endpoint(request)
            await response(scope, receive, tracked)
        except Exception as exc:
            if started:
                raise
            answer: Any = await self.on_error(request, exc)
            await answer(scope, receive, send)
            if not isinstance(exc, HTTPException):
                raise  # as Starlette's server-error middleware does: answered, then the server logs it
