"""The chat endpoints by exact path (server/hot_routes.py): the same answers as through the router."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from autotune_core.server import create_app
from autotune_core.server.hot_routes import HOT_PATHS, HotRoutes, hot_endpoints

BODY = {"model": "llama3.2:1b", "messages": [{"role": "user", "content": "hi"}], "stream": False}


def test_every_hot_path_of_the_app_is_served_by_its_route(live: Any) -> None:
    """Both doors' chat and completion endpoints are found; the answers are the normal ones."""
    assert set(hot_endpoints(create_app(live.host, sampler=False).routes)) == HOT_PATHS
    with live.client() as client:
        assert client.post("/v1/chat/completions", json=BODY).json()["object"] == "chat.completion"
        assert client.post("/api/chat", json=BODY).json()["done"] is True
        assert client.post("/api/generate", json={"model": "llama3.2:1b", "prompt": "hi", "stream": False}).json()[
            "done"
        ]
        assert client.post("/v1/completions", json={"model": "llama3.2:1b", "prompt": "hi"}).json()["object"] == (
            "text_completion"
        )


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/v1/chat/completions", 405), ("GET", "/api/chat", 405), ("POST", "/api/chat/", None)],
)
def test_other_methods_and_paths_still_go_through_the_router(
    live: Any, method: str, path: str, status: int | None
) -> None:
    with live.client(follow_redirects=False) as client:
        response = client.request(method, path, json=BODY if method == "POST" else None)
    if status is not None:
        assert response.status_code == status
        assert "error" in response.json()
    else:  # a trailing slash: the router's answer (a redirect or a 404), never the fast path's
        assert response.status_code in (307, 404)


def _app(endpoint: Any) -> tuple[Starlette, list[Exception]]:
    seen: list[Exception] = []

    async def on_error(request: Request, exc: Exception) -> Response:
        seen.append(exc)
        return JSONResponse({"error": type(exc).__name__}, status_code=500)

    routes = [Route("/api/chat", endpoint, methods=["POST"]), Route("/api/chat", endpoint, methods=["GET"])]
    app = Starlette(routes=routes)
    return HotRoutes(app, endpoints=hot_endpoints(routes), on_error=on_error), seen  # type: ignore[return-value]


async def test_an_error_before_the_answer_starts_gets_the_error_handler() -> None:
    async def broken(request: Request) -> Response:
        raise RuntimeError("boom")

    app, seen = _app(broken)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        response = await client.post("/api/chat", json={})
    assert response.status_code == 500 and response.json() == {"error": "RuntimeError"}
    assert [type(exc) for exc in seen] == [RuntimeError]


async def test_an_error_after_the_answer_started_propagates() -> None:
    """As in Starlette: once the status line is out, the error is the server's to log, not a second answer."""

    class Broken(Response):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            raise RuntimeError("mid-answer")

    async def endpoint(request: Request) -> Response:
        return Broken()

    app, seen = _app(endpoint)
    with pytest.raises(RuntimeError, match="mid-answer"):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
            await client.post("/api/chat", json={})
    assert seen == []


def test_the_first_route_for_a_path_wins_as_in_the_router() -> None:
    async def first(request: Request) -> Response:
        return Response("first")

    async def second(request: Request) -> Response:
        return Response("second")

    routes = [Route("/api/chat", first, methods=["POST"]), Route("/api/chat", second, methods=["POST"])]
    assert hot_endpoints(routes) == {"/api/chat": first}
    assert hot_endpoints([Route("/api/chat", first, methods=["GET"])]) == {}
