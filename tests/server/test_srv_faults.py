"""Fault handling: upstream dying mid-stream, slow upstreams, unreachable upstreams, client disconnects.

Every test also checks that no queue slot leaks.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Any

import httpx
import ollama
import openai
import pytest
from conftest import LiveServer, SlowFake, serve, settings

from autotune_core.host import PluginHost
from autotune_core.testing import make_hardware

MSGS: list[Any] = [{"role": "user", "content": "hi"}]
CHAT = {"model": "llama3.2:1b", "messages": MSGS}


def test_upstream_failure_mid_stream_sse(live_factory: Any) -> None:
    live: LiveServer = live_factory(fake={"fail_after_chunks": 2})
    with httpx.Client(base_url=live.url, timeout=10) as client:
        text = client.post("/v1/chat/completions", json={**CHAT, "stream": True}).text
    events = [block[len("data: ") :] for block in text.split("\n\n") if block.startswith("data: ")]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["type"] == "upstream_error" and "dropped" in error["message"]
    contents = [json.loads(e)["choices"][0]["delta"].get("content") for e in events[:-2]]
    assert contents == ["", "Hello", " from"]
    # the SDK surfaces the in-band error as an exception after the partial output
    client_sdk = openai.OpenAI(base_url=live.url + "/v1", api_key="x", max_retries=0, timeout=10)
    with pytest.raises(openai.APIError):
        list(client_sdk.chat.completions.create(model="llama3.2:1b", messages=MSGS, stream=True))
    live.wait_idle()
    assert 'autotune_errors_total{type="upstream_error"}' in httpx.get(live.url + "/metrics").text


def test_upstream_failure_mid_stream_ndjson(live_factory: Any) -> None:
    live: LiveServer = live_factory(fake={"fail_after_chunks": 3})
    with httpx.Client(base_url=live.url, timeout=10) as client:
        lines = [json.loads(line) for line in client.post("/api/chat", json=CHAT).text.splitlines() if line]
    assert [line["message"]["content"] for line in lines[:-1]] == ["Hello", " from", " the"]
    assert set(lines[-1]) == {"error"} and "dropped" in lines[-1]["error"]
    with pytest.raises(ollama.ResponseError):
        list(ollama.Client(host=live.url, timeout=10).chat(model="llama3.2:1b", messages=MSGS, stream=True))
    live.wait_idle()


def test_failure_before_the_first_chunk_keeps_its_status(live_factory: Any) -> None:
    live: LiveServer = live_factory(fake={"fail_after_chunks": 0})
    with httpx.Client(base_url=live.url, timeout=10) as client:
        sse = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
        nd = client.post("/api/chat", json=CHAT)
    assert sse.status_code == 502 and sse.json()["error"]["type"] == "upstream_error"
    assert nd.status_code == 502 and "error" in nd.json()
    assert "x-autotune-plan" in sse.headers and "x-autotune-plan" in nd.headers
    live.wait_idle()


def test_slow_upstream_times_out_with_504_and_is_cancelled(live_factory: Any) -> None:
    live: LiveServer = live_factory(backend=SlowFake, fake={"chat_delay": 5, "chunk_delay": 5}, upstream_timeout=0.2)
    with httpx.Client(base_url=live.url, timeout=10) as client:
        started = time.monotonic()
        plain = client.post("/v1/chat/completions", json=CHAT)
        stream = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
        nd = client.post("/api/generate", json={"model": "llama3.2:1b", "prompt": "x", "stream": False})
        took = time.monotonic() - started
    assert plain.status_code == 504
    assert plain.json()["error"]["type"] == plain.json()["error"]["code"] == "upstream_timeout"
    assert stream.status_code == 504 and nd.status_code == 504 and set(nd.json()) == {"error"}
    assert took < 3
    live.wait_idle()
    assert live.fake.cancelled >= 3


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat"])
def test_an_upstream_that_goes_silent_mid_stream_is_cut_off_after_upstream_timeout(
    live_factory: Any, path: str
) -> None:
    live: LiveServer = live_factory(
        backend=SlowFake, fake={"stall_after_chunks": 2, "stall_seconds": 30}, upstream_timeout=0.5
    )
    started = time.monotonic()
    text = httpx.post(live.url + path, json={**CHAT, "stream": True}, timeout=10).text
    assert time.monotonic() - started < 3
    assert "upstream_timeout" in text or "sent nothing for 0.5 s" in text
    assert "Hello" in text  # what arrived before the stall was passed on
    live.wait_idle()
    assert live.state.metrics.errors.get({"type": "upstream_timeout"}) == 1


def test_upstream_connection_refused_is_502(live_factory: Any) -> None:
    live: LiveServer = live_factory(backend=SlowFake, fake={"chat_error": True})
    response = httpx.post(live.url + "/v1/chat/completions", json=CHAT, timeout=10)
    assert response.status_code == 502
    assert response.json()["error"]["type"] == response.json()["error"]["code"] == "upstream_error"
    # it failed after planning: what was asked of the model server comes along (often the reason it failed)
    assert "x-autotune-plan" in response.headers and "x-autotune-overhead-ms" in response.headers
    unknown = httpx.post(live.url + "/v1/chat/completions", json={**CHAT, "model": "nope"}, timeout=10)
    assert unknown.status_code == 404 and "x-autotune-plan" not in unknown.headers  # refused before planning
    live.wait_idle()


def test_no_backend_answers_is_502_not_404(live: LiveServer) -> None:
    live.fake.up = False
    live.state.pipeline.resolver.invalidate()
    live.state.status.clear()
    openai_door = httpx.post(live.url + "/v1/chat/completions", json=CHAT, timeout=10)
    ollama_door = httpx.post(live.url + "/api/chat", json=CHAT, timeout=10)
    assert openai_door.status_code == 502
    assert openai_door.json()["error"]["type"] == openai_door.json()["error"]["code"] == "backend_unavailable"
    assert ollama_door.status_code == 502 and "fake backend is down" in ollama_door.json()["error"]
    health = httpx.get(live.url + "/health", timeout=5).json()
    assert health["status"] == "degraded" and health["backends"][0]["available"] is False


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat"])
def test_client_disconnect_releases_the_slot_and_cancels_upstream(live_factory: Any, path: str) -> None:
    live: LiveServer = live_factory(fake={"chunk_delay": 0.3}, max_concurrent=1)
    with httpx.Client(base_url=live.url, timeout=10) as client:
        with client.stream("POST", path, json={**CHAT, "stream": True}) as response:
            assert response.status_code == 200
            next(response.iter_bytes())  # the first chunk arrived; now hang up mid-stream
        deadline = time.monotonic() + 5
        while live.fake.cancelled == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert live.fake.cancelled == 1
    live.wait_idle()
    # the freed slot serves the next request at once
    assert httpx.post(live.url + "/v1/chat/completions", json=CHAT, timeout=10).status_code == 200
    assert "autotune_client_disconnects_total" in httpx.get(live.url + "/metrics").text


def _hang_up_after_sending(live: LiveServer, path: str, body: dict[str, Any]) -> socket.socket:
    """Send a whole request on a raw socket (the caller closes it without reading the answer)."""
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", int(live.url.rsplit(":", 1)[1])), timeout=5)
    sock.sendall(
        b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(data), data)
    )
    return sock


def _until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", CHAT),
        ("/api/chat", {**CHAT, "stream": False}),
        ("/v1/embeddings", {"model": "llama3.2:1b", "input": "hi"}),
        ("/api/embed", {"model": "llama3.2:1b", "input": "hi"}),
    ],
)
def test_non_streaming_client_hanging_up_frees_its_slot_and_its_place_in_line(
    live_factory: Any, path: str, body: dict[str, Any]
) -> None:
    """uvicorn does not cancel a handler whose client left: the proxy must notice, or the slot stays held
    and the waiter behind it later makes an upstream call for nobody."""
    live: LiveServer = live_factory(
        backend=SlowFake, fake={"chat_delay": 30, "embed_delay": 30}, max_concurrent=1, queue_timeout=30
    )
    holder = _hang_up_after_sending(live, path, body)
    assert _until(lambda: live.state.queue.active == 1)
    waiter = _hang_up_after_sending(live, path, body)
    assert _until(lambda: live.state.queue.depth == 1)
    # the waiter first, and alone: two hang-ups at once may reach the server in either order, and a waiter
    # the server still sees connected when the slot frees rightly gets it (its call is then cancelled)
    waiter.close()
    assert _until(lambda: live.state.queue.depth == 0), "the waiter kept its place in line"
    assert live.state.queue.active == 1
    holder.close()
    assert _until(lambda: live.fake.cancelled == 1), "the upstream call was not cancelled"
    live.wait_idle(timeout=2)  # the slot is free and the line empty long before the 30 s upstream call
    assert live.fake.cancelled == 1  # the waiter never reached the upstream
    metrics = httpx.get(live.url + "/metrics", timeout=5).text
    assert (
        f'autotune_requests_total{{door="{"ollama" if path.startswith("/api") else "openai"}",'
        f'endpoint="{path}",status="499"}} 2' in metrics
    )
    live.fake.settings.update(chat_delay=0, embed_delay=0)
    assert httpx.post(live.url + path, json=body, timeout=10).status_code == 200


def test_fake_ollama_killed_mid_stream(fake_ollama_factory: Any) -> None:
    """The real Ollama backend plugin against a fake Ollama that drops the connection mid-stream."""
    from autotune_plugins.backends.ollama import OllamaPlugin

    fake = fake_ollama_factory(fail_mid_stream_after=2)
    config = settings()
    config.backend_order = ["ollama"]
    config.backends["ollama"] = {"url": fake.url}
    host = PluginHost(config=config, plugins=[OllamaPlugin()], load_entrypoints=False, hardware=make_hardware())
    live = serve(host)
    try:
        with httpx.Client(base_url=live.url, timeout=10) as client:
            text = client.post("/v1/chat/completions", json={**CHAT, "stream": True}).text
            lines = [line for line in client.post("/api/chat", json=CHAT).text.splitlines() if line]
        assert text.rstrip().endswith("data: [DONE]")
        assert '"error":{"type":"upstream_error"' in text
        assert "error" in json.loads(lines[-1])
        live.wait_idle()
    finally:
        live.stop()
