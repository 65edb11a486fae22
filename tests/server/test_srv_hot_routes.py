"""The chat endpoints by exact path (server/hot_routes.py): the same answers as through the router."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
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


async def test_an_error_before_the_answer_starts_gets_the_error_handler_then_is_raised_for_the_log() -> None:
    """As Starlette's server-error middleware: the client gets the handler's answer, the server the traceback."""

    async def broken(request: Request) -> Response:
        raise RuntimeError("boom")

    app, seen = _app(broken)
    raised: list[BaseException] = []

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        try:
            await app(scope, receive, send)
        except RuntimeError as exc:
            raised.append(exc)

    transport = httpx.ASGITransport(app=recording)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        response = await client.post("/api/chat", json={})
    assert response.status_code == 500 and response.json() == {"error": "RuntimeError"}
    assert [type(exc) for exc in seen] == [RuntimeError]
    assert [str(exc) for exc in raised] == ["boom"]


async def test_an_http_exception_is_answered_and_not_raised() -> None:
    async def refused(request: Request) -> Response:
        raise HTTPException(status_code=418)

    app, seen = _app(refused)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        response = await client.post("/api/chat", json={})
    assert response.status_code == 500 and [type(exc) for exc in seen] == [HTTPException]


async def test_a_mounted_app_leaves_the_hot_paths_to_the_router() -> None:
    async def endpoint(request: Request) -> Response:
        return Response("hot")

    async def router(scope: Any, receive: Any, send: Any) -> None:
        await Response("router")(scope, receive, send)

    hot = HotRoutes(router, endpoints={"/api/chat": endpoint}, on_error=None)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=hot, root_path="/x"), base_url="http://h") as c:
        assert (await c.post("/api/chat")).text == "router"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=hot), base_url="http://h") as c:
        assert (await c.post("/api/chat")).text == "hot"


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
