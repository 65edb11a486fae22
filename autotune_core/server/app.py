"""The ASGI app: both front doors on one port, health, metrics, plugin routes, typed errors everywhere."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from .. import __version__
from ..config import Settings
from ..errors import AutotuneError
from ..host import PluginHost
from ..plugin_report import plugins_report
from . import ollama_door, openai_door
from .auth import ApiKeyMiddleware
from .errors import NotFoundRoute, classify, door_for_path, error_body, error_headers
from .exchange import json_response
from .guard import guard_middleware
from .hot_routes import HotRoutes, hot_endpoints
from .state import ServerState

log = logging.getLogger("autotune.server")

PROMETHEUS_MEDIA = "text/plain; version=0.0.4; charset=utf-8"


def _error_handler(state: ServerState) -> Callable[[Request, Exception], Any]:
    async def handler(request: Request, exc: Exception) -> Response:
        door = door_for_path(request.url.path)
        if isinstance(exc, HTTPException):
            error: AutotuneError = (
                NotFoundRoute(f"no route for {request.method} {request.url.path}")
                if exc.status_code == 404
                else AutotuneError(
                    str(exc.detail),
                    type="invalid_request_error",
                    status=exc.status_code,
                    code="method_not_allowed" if exc.status_code == 405 else None,
                )
            )
        else:
            error = classify(exc)
        state.metrics.errors.inc({"type": error.type})
        state.metrics.requests.inc({"door": door, "endpoint": "other", "status": str(error.status)})
        return json_response(error_body(door, error), error.status, error_headers(error))

    return handler


def plugin_statuses(host: PluginHost) -> dict[str, Any]:
    """The ``plugin_status`` report of every enabled plugin that offers one (the session advisor's health score).

    A failing report is isolated like any plugin failure and shown as an error entry.
    """
    return host.hooks.plugin_status()


def _observability_routes(state: ServerState) -> list[BaseRoute]:
    async def health(request: Request) -> Response:
        statuses = await state.backend_statuses()
        status = "ok" if any(s.ok for s in statuses) else "degraded"
        if not getattr(request.state, "autotune_authorized", True):
            return json_response({"status": status})
        pressure = state.host.pressure
        return json_response(
            {
                "status": status,
                "version": __version__,
                "profile": state.host.config.profile,
                "backends": [
                    {"name": s.name, "available": s.ok, "reason": s.reason, "version": s.version} for s in statuses
                ],
                "queue": {
                    "active": state.queue.active,
                    "queued": state.queue.depth,
                    "max_concurrent": state.queue.max_concurrent,
                    "limit": state.queue.limit,
                    "backend_slots": state.queue.slots,
                    "max_queued": state.queue.max_queued,
                    "timeout_s": state.queue.timeout,
                },
                "pressure": {
                    "tier": state.pressure_tier(),
                    **(
                        {"ram_percent": pressure.ram_percent, "swap_percent": pressure.swap_percent}
                        if pressure is not None
                        else {}
                    ),
                },
                "plugins": plugin_statuses(state.host),
            }
        )

    async def metrics(request: Request) -> Response:
        m = state.metrics
        m.queue_depth.set(state.queue.depth)
        m.queue_active.set(state.queue.active)
        m.queue_capacity.set(state.queue.limit)  # live: a plugin may have lowered it
        series = []
        for name in sorted(state.backends_used | {n for n, s in state.status.items() if s.ok}):
            with contextlib.suppress(Exception):
                series.append(({"backend": name}, float(state.host.backend(name).reloads)))
        m.reloads.replace(series)
        m.plugin_failures.replace([({"plugin": r.name}, float(r.failures)) for r in state.host.records.values()])
        if state.host.pressure is not None:
            m.pressure.replace([({"tier": state.host.pressure.tier}, 1.0)])
        return PlainTextResponse(m.render(), media_type=PROMETHEUS_MEDIA)

    async def plugins(request: Request) -> Response:
        """Exactly what ``autotune plugins list --json`` prints for this host, plus the server's stack."""
        stack = sorted(state.host.stack) if state.host.stack is not None else None
        return json_response({**plugins_report(state.host), "stack": stack})

    async def root(request: Request) -> Response:
        return PlainTextResponse("autotune is running (OpenAI /v1 and Ollama /api)")

    return [
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/-/plugins", plugins, methods=["GET"]),
        Route("/", root, methods=["GET", "HEAD"]),
    ]


def _plugin_routes(host: PluginHost) -> list[BaseRoute]:
    """Routes plugins add through ``register_routes(register)``; core routes win on a clash."""
    added: list[BaseRoute] = []

    def register(
        path: str, endpoint: Callable[..., Any], methods: list[str] | None = None, name: str | None = None
    ) -> None:
        added.append(Route(path, endpoint, methods=methods, name=name))

    host.hooks.register_routes(register=register)
    return added


def create_app(
    host: PluginHost | None = None,
    settings: Settings | None = None,
    *,
    sampler: bool = True,
    keepalive_interval: float = 5.0,
    on_ready: Callable[[list[tuple[str, bool, str]]], None] | None = None,
) -> Starlette:
    """Build the proxy for ``host`` (a fresh one from ``settings``/the config file when None).

    ``settings.server`` (else ``host.config.server``) gives the queue, limits and API key.
    """
    if host is None:
        host = PluginHost(config=settings)
    config = (settings or host.config).server
    state = ServerState(host, config, keepalive_interval=keepalive_interval, use_sampler=sampler)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await state.startup()
        if on_ready is not None:
            statuses = [state.status[n] for n in state.pipeline.resolver.candidates() if n in state.status]
            on_ready([(s.name, s.ok, s.reason) for s in statuses])
        try:
            yield
        finally:
            await state.shutdown()

    routes = _observability_routes(state) + openai_door.routes(state) + ollama_door.routes(state)
    routes += _plugin_routes(host)
    handler = _error_handler(state)
    middleware = [Middleware(ApiKeyMiddleware, api_key=config.api_key)] if config.api_key else []
    # outermost: Host/Origin refusals before any work; CORS headers on every answer, 401s included
    methods = {method for route in routes for method in (getattr(route, "methods", None) or ())}
    middleware.insert(0, guard_middleware(config, methods))
    # innermost: the chat endpoints by exact path, past the router (after the guard and the key check)
    middleware.append(Middleware(HotRoutes, endpoints=hot_endpoints(routes), on_error=handler))
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=middleware,
        exception_handlers={HTTPException: handler, Exception: handler},
    )
    app.state.autotune = state
    return app
