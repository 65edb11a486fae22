"""The embedded engine's worker process dying or hanging under a live server (real Gemma 3 270M).

Each case: the client gets the defined error (502 ``backend_crashed`` naming the signal, or an in-stream
error event and a clean close), no queue slot leaks, another backend keeps serving, and the next request
succeeds on a fresh worker. The crash switch (``AUTOTUNE_TEST_WORKER_CRASH``) is read by the worker only.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import LiveServer, serve, settings

from autotune_core.host import PluginHost
from autotune_core.testing import FakeBackendPlugin, make_hardware

pytestmark = pytest.mark.embedded
pytest.importorskip("llama_cpp")

from autotune_plugins.backends.llamacpp import LlamaCppPlugin  # noqa: E402
from autotune_plugins.backends.llamacpp.crashes import REINSTALL  # noqa: E402
from autotune_plugins.backends.llamacpp.runner import CRASH_ENV  # noqa: E402

MODEL = "gemma3-270m"
OTHER = "llama3.2:1b"  # served by the fake backend on the same proxy


def _live(**server: Any) -> LiveServer:
    """A live server on the real llamacpp backend (its worker process, crashes injected) beside the fake one."""
    config = settings(**server)
    config.backend_order = ["llamacpp", "fake"]
    config.backends["llamacpp"] = {"n_ctx": 512, "cancel_grace": 1.0, "crash_backoff": 0.0, "keep_alive": -1}
    host = PluginHost(
        config=config, plugins=[LlamaCppPlugin(), FakeBackendPlugin()], load_entrypoints=False, hardware=make_hardware()
    )
    return serve(host, keepalive_interval=0.5)


@pytest.fixture
def live(monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveServer]:
    monkeypatch.delenv(CRASH_ENV, raising=False)
    server = _live()
    yield server
    server.stop()


def body(model: str = MODEL, *, stream: bool = False, max_tokens: int = 8, prompt: str = "Name one colour.") -> Any:
    return {
        "model": model,
        "stream": stream,
        "max_tokens": max_tokens,
        "temperature": 0,
        "messages": [{"role": "user", "content": prompt}],
    }


def chat(live: LiveServer, **kw: Any) -> httpx.Response:
    with live.client(timeout=60) as client:
        return client.post("/v1/chat/completions", json=body(**kw))


def sse(live: LiveServer, **kw: Any) -> tuple[int, list[Any]]:
    """(status, data events) of a streamed answer; ``"[DONE]"`` stays a string."""
    events: list[Any] = []
    with (
        live.client(timeout=60) as client,
        client.stream("POST", "/v1/chat/completions", json=body(stream=True, **kw)) as response,
    ):
        for line in response.iter_lines():
            if line.startswith("data: "):
                data = line[6:]
                events.append(data if data == "[DONE]" else json.loads(data))
        return response.status_code, events


def backend(live: LiveServer) -> Any:
    return live.host.backend("llamacpp")


def recovered(live: LiveServer, monkeypatch: pytest.MonkeyPatch, crashed_pid: int | None) -> None:
    """No slot leaked, the other backend serves, and (switch off) the next request runs on a new worker."""
    live.wait_idle(timeout=5)
    assert live.state.queue.active == 0 and live.state.queue.depth == 0
    assert chat(live, model=OTHER).status_code == 200
    monkeypatch.delenv(CRASH_ENV, raising=False)
    again = chat(live)
    assert again.status_code == 200, again.text
    assert again.json()["choices"][0]["message"]["content"]
    assert backend(live).engine.pid not in (None, crashed_pid)
    live.wait_idle(timeout=5)


def test_sigsegv_mid_stream_ends_the_stream_with_an_error_event(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CRASH_ENV, "mid_stream")
    status, events = sse(live, max_tokens=16)
    assert status == 200
    assert any(isinstance(e, dict) and e.get("choices") for e in events), "tokens came before the crash"
    errors = [e["error"] for e in events if isinstance(e, dict) and "error" in e]
    assert len(errors) == 1 and errors[0]["code"] == "backend_crashed", events
    assert "SIGSEGV" in errors[0]["message"] and "middle of an answer" in errors[0]["message"]
    assert events[-1] == "[DONE]", "a clean close after the error event"
    assert live.state.metrics.errors.get({"type": "backend_crashed"}) == 1
    recovered(live, monkeypatch, None)


def test_sigsegv_at_load_is_a_502_naming_the_signal_and_the_fix(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CRASH_ENV, "at_load")
    response = chat(live)
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == error["code"] == "backend_crashed"
    assert "SIGSEGV before its first token" in error["message"] and REINSTALL in error["message"]
    assert backend(live).engine.crashes.total == 1
    recovered(live, monkeypatch, None)


def test_a_worker_killed_with_sigkill_during_a_request(live: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    assert chat(live, max_tokens=2).status_code == 200
    engine = backend(live).engine
    pid = engine.pid
    assert pid is not None
    answer: dict[str, httpx.Response] = {}
    thread = threading.Thread(
        target=lambda: answer.setdefault("r", chat(live, max_tokens=400, prompt="Count from 1 to 500."))
    )
    thread.start()
    deadline = time.monotonic() + 30
    while not (engine.busy and engine.worker is not None and engine.worker.tokens > 3) and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)  # what the kernel's OOM killer does
    thread.join(timeout=30)
    response = answer["r"]
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "backend_crashed" and "SIGKILL" in error["message"]
    assert "out-of-memory" in error["message"]
    recovered(live, monkeypatch, pid)


def test_a_hung_worker_is_killed_and_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    """No token within the server's upstream_timeout: the stream ends with its error and the worker is killed."""
    monkeypatch.setenv(CRASH_ENV, "hang")
    live = _live(upstream_timeout=20.0)  # room for a cold worker start and a load on a busy machine
    try:
        _hung(live, monkeypatch)
    finally:
        live.stop()


def _hung(live: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    started = time.monotonic()
    status, events = sse(live, max_tokens=16)
    assert status == 200
    errors = [e["error"] for e in events if isinstance(e, dict) and "error" in e]
    assert len(errors) == 1 and errors[0]["type"] == "upstream_timeout", events  # the server's upstream_timeout
    assert events[-1] == "[DONE]"
    engine = backend(live).engine
    deadline = time.monotonic() + 10
    while engine.crashes.total == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert engine.crashes.last is not None and "stopped answering" in engine.crashes.last.message
    assert time.monotonic() - started < 60
    recovered(live, monkeypatch, None)


def test_sigill_takes_the_backend_down_with_the_reason_in_health(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CRASH_ENV, "at_load:SIGILL")
    response = chat(live)
    assert response.status_code == 502 and "SIGILL" in response.json()["error"]["message"]
    live.wait_idle(timeout=5)
    monkeypatch.delenv(CRASH_ENV)
    again = chat(live)  # a deterministic crash: no new worker, the same reason at once
    assert again.status_code == 502 and again.json()["error"]["code"] == "backend_crashed"
    assert REINSTALL in again.json()["error"]["message"] and backend(live).engine.starts == 1
    deadline = time.monotonic() + 5
    entry: dict[str, Any] = {}
    while time.monotonic() < deadline:  # /health re-checks a backend every 2 s
        with live.client() as client:
            entry = next(b for b in client.get("/health").json()["backends"] if b["name"] == "llamacpp")
        if not entry["available"]:
            break
        time.sleep(0.2)
    assert not entry["available"] and REINSTALL in entry["reason"] and "SIGILL" in entry["reason"]
    assert chat(live, model=OTHER).status_code == 200
    live.wait_idle(timeout=5)
