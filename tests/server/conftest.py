"""Fixtures for the server suite: the real app under uvicorn, in a background thread, on an ephemeral
127.0.0.1 port, over the in-process FakeBackend (or any host you build)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn

from autotune_core.config import Settings, validate_settings
from autotune_core.host import PluginHost
from autotune_core.markers import hookimpl
from autotune_core.pytest_plugin import make_host
from autotune_core.server import create_app
from autotune_core.server.state import ServerState
from autotune_core.testing import FakeBackend


@dataclass
class LiveServer:
    url: str
    host: PluginHost
    state: ServerState
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def fake(self) -> FakeBackend:
        backend = self.host.backend("fake")
        assert isinstance(backend, FakeBackend)
        return backend

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kw.pop("timeout", 10.0), **kw)

    def wait_idle(self, timeout: float = 5.0) -> None:
        """Wait (bounded) until no request holds or waits for a slot."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.state.queue.active == 0 and self.state.queue.depth == 0:
                return
            time.sleep(0.01)
        raise AssertionError(f"queue not idle: active={self.state.queue.active} queued={self.state.queue.depth}")

    def stop(self, wait: bool = True) -> None:
        self.server.should_exit = True
        if wait:
            self.thread.join(timeout=10)
        else:  # uvicorn notices within 0.1 s; joined at the end of the session (keeps the suite fast)
            _stopping.append(self.thread)


_stopping: list[threading.Thread] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for thread in _stopping:
        thread.join(timeout=10)


def settings(**server: Any) -> Settings:
    raw: dict[str, Any] = {"backend_order": ["fake"], "server": server}
    return validate_settings(raw, "<test>")


def serve(host: PluginHost, *, keepalive_interval: float = 5.0, **app_kw: Any) -> LiveServer:
    app = create_app(host, sampler=False, keepalive_interval=keepalive_interval, **app_kw)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)

    def run() -> None:
        asyncio.run(server.serve(sockets=[sock]))

    thread = threading.Thread(target=run, name=f"autotune-test-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.005)
    return LiveServer(f"http://127.0.0.1:{port}", host, app.state.autotune, server, thread)


class Recorder:
    """Records every ChatRequest the pipeline sees (pre_request) and every result (post_response)."""

    name = "recorder"

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.results: list[Any] = []

    @hookimpl
    def pre_request(self, ctx: Any, request: Any, plan: Any) -> None:
        self.requests.append(request)

    @hookimpl
    def post_response(self, ctx: Any, request: Any, plan: Any, result: Any) -> None:
        self.results.append(result)


class SlowFake(FakeBackend):
    """A FakeBackend whose non-streaming answers (embeddings) take ``chat_delay`` (``embed_delay``) seconds and which
    counts cancellations."""

    async def chat(self, request: Any, plan: Any) -> Any:
        try:
            await asyncio.sleep(float(self.settings.get("chat_delay", 0.0)))
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.settings.get("chat_error"):
            raise ConnectionError("fake upstream refused the connection")
        return await super().chat(request, plan)

    async def stream_chat(self, request: Any, plan: Any) -> Any:
        """``stall_after_chunks``: after that many chunks, go silent for ``stall_seconds`` (a hung runner)."""
        stall_after = self.settings.get("stall_after_chunks")
        sent = 0
        async for chunk in super().stream_chat(request, plan):
            if stall_after is not None and sent == stall_after:
                await asyncio.sleep(float(self.settings.get("stall_seconds", 30.0)))
            sent += 1
            yield chunk

    async def embed(self, model: str, inputs: list[str]) -> Any:
        try:
            await asyncio.sleep(float(self.settings.get("embed_delay", 0.0)))
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return await super().embed(model, inputs)


def fake_host(
    *plugins: object, fake: dict[str, Any] | None = None, backend: type[FakeBackend] | None = None, **server: Any
) -> PluginHost:
    """The shipped host (pytest_plugin.make_host) with ``[server]`` settings and the fake backend's settings."""
    config = settings(**server)
    if fake:
        config.backends["fake"] = fake
    return make_host(*plugins, config=config, backend=backend)


@pytest.fixture
def live_factory() -> Iterator[Callable[..., LiveServer]]:
    """``make(*plugins, fake={...FakeBackend settings}, keepalive_interval=.., **[server] settings)``."""
    made: list[LiveServer] = []

    def make(
        *plugins: object,
        fake: dict[str, Any] | None = None,
        keepalive_interval: float = 5.0,
        host: PluginHost | None = None,
        backend: type[FakeBackend] | None = None,
        **server: Any,
    ) -> LiveServer:
        live = serve(
            host or fake_host(*plugins, fake=fake, backend=backend, **server), keepalive_interval=keepalive_interval
        )
        made.append(live)
        return live

    yield make
    for live in made:
        live.stop(wait=False)


@pytest.fixture
def live(live_factory: Callable[..., LiveServer]) -> LiveServer:
    return live_factory()
