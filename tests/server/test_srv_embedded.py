"""The server on the real embedded model (llama-cpp-python + Gemma 3 270M): both SDKs, both doors."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import ollama
import openai
import pytest
from conftest import LiveServer, serve, settings

from autotune_core.host import PluginHost
from autotune_core.testing import make_hardware

pytestmark = pytest.mark.embedded

MSGS: list[Any] = [{"role": "user", "content": "Name one colour."}]


@pytest.fixture(scope="module")
def embedded() -> Iterator[tuple[LiveServer, str]]:
    """A live server on the real embedded llamacpp backend only, shared by the module (one model load)."""
    try:
        from autotune_plugins.backends.llamacpp import LlamaCppPlugin
    except ImportError as exc:  # the backend plugin is written by another engineer
        pytest.skip(f"the llamacpp backend plugin is not importable yet: {exc}")
    config = settings()
    config.backend_order = ["llamacpp"]
    host = PluginHost(config=config, plugins=[LlamaCppPlugin()], load_entrypoints=False, hardware=make_hardware())
    live = serve(host)
    try:
        backend = host.backend("llamacpp")
        models = [m.id for m in openai.OpenAI(base_url=live.url + "/v1", api_key="x", timeout=60).models.list()]
        if not models:
            pytest.skip(f"the embedded model is not available: {live.state.status.get(backend.name)}")
        yield live, models[0]
    finally:
        live.stop()


def test_openai_non_streaming_and_streaming(embedded: tuple[LiveServer, str]) -> None:
    live, model = embedded
    client = openai.OpenAI(base_url=live.url + "/v1", api_key="x", timeout=120, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model=model, messages=MSGS, max_tokens=8, temperature=0)
    reply = raw.parse()
    assert reply.choices[0].message.content
    assert reply.usage is not None and 0 < reply.usage.completion_tokens <= 8
    assert "num_ctx=" in raw.headers["x-autotune-plan"]
    chunks = list(
        client.chat.completions.create(
            model=model, messages=MSGS, max_tokens=8, temperature=0, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert text == reply.choices[0].message.content, "temperature 0: streamed and whole answers agree"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 8
    live.wait_idle()


def test_ollama_door(embedded: tuple[LiveServer, str]) -> None:
    live, model = embedded
    client = ollama.Client(host=live.url, timeout=120)
    assert model in {m.model for m in client.list().models}
    parts = list(client.chat(model=model, messages=MSGS, stream=True, options={"num_predict": 8, "temperature": 0}))
    assert "".join(p.message.content or "" for p in parts).strip()
    assert parts[-1].done and parts[-1].eval_count and parts[-1].eval_count <= 8
    generated = client.generate(model=model, prompt="The sky is", options={"num_predict": 6, "temperature": 0})
    assert generated.response and generated.done
    live.wait_idle()


def test_errors_on_the_embedded_model(embedded: tuple[LiveServer, str]) -> None:
    live, model = embedded
    with pytest.raises(openai.NotFoundError) as missing:
        openai.OpenAI(base_url=live.url + "/v1", api_key="x", max_retries=0, timeout=30).chat.completions.create(
            model="no-such-model", messages=MSGS, max_tokens=4
        )
    assert model in str(missing.value)
    with pytest.raises(ollama.ResponseError) as bad:
        ollama.Client(host=live.url, timeout=30).chat(model=model, messages=[{"role": "robot", "content": "x"}])
    assert bad.value.status_code == 400


def test_a_client_hanging_up_stops_the_embedded_generation(embedded: tuple[LiveServer, str]) -> None:
    """Non-streaming: the slot frees at once and the worker process stops at its next token, not at the end."""
    live, model = embedded
    backend: Any = live.host.backend("llamacpp")
    body = json.dumps(
        {
            "model": model,
            "max_tokens": 1500,
            "temperature": 0,
            "messages": [{"role": "user", "content": "Count from 1 to 1000, one number per line."}],
        }
    ).encode()
    sock = socket.create_connection(("127.0.0.1", int(live.url.rsplit(":", 1)[1])), timeout=10)
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    deadline = time.monotonic() + 30
    while not backend.engine.busy and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # well into the answer: 1500 tokens take far longer than this
    assert backend.engine.busy, "the generation ended before the client hung up"
    pid = backend.engine.pid
    sock.close()
    live.wait_idle(timeout=3)
    deadline = time.monotonic() + 5
    while backend.engine.busy and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not backend.engine.busy, "the generation went on for nobody"
    assert backend.engine.pid == pid, "the worker stopped generating; it was not killed"
    assert live.state.metrics.errors.get({"type": "client_disconnected"}) == 1
