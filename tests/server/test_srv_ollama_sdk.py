"""The official ``ollama`` SDK against a running autotune server on the in-process FakeBackend."""

from __future__ import annotations

from typing import Any

import httpx
import ollama
import pytest
from conftest import LiveServer, Recorder, serve, settings

from autotune_core.host import PluginHost
from autotune_core.testing import make_hardware

REPLY = "Hello from the fake backend."
MSGS: list[Any] = [{"role": "user", "content": "hi"}]


def sdk(live: LiveServer) -> ollama.Client:
    return ollama.Client(host=live.url, timeout=10)


def test_chat_streaming_by_default_and_non_streaming(live: LiveServer) -> None:
    client = sdk(live)
    parts = list(client.chat(model="llama3.2:1b", messages=MSGS, stream=True))
    assert "".join(p.message.content or "" for p in parts) == REPLY
    final = parts[-1]
    assert final.done and final.done_reason == "stop"
    assert final.eval_count and final.prompt_eval_count and final.total_duration and final.eval_duration
    whole = client.chat(model="llama3.2:1b", messages=MSGS)
    assert whole.message.content == REPLY and whole.done and whole.done_reason == "stop"
    # raw: streaming is the default when the client does not say
    with httpx.stream(
        "POST", live.url + "/api/chat", json={"model": "llama3.2:1b", "messages": MSGS}, timeout=10
    ) as response:
        assert response.headers["content-type"].startswith("application/x-ndjson")
        assert len([line for line in response.iter_lines() if line]) > 2
    live.wait_idle()


def test_generate(live_factory: Any) -> None:
    recorder = Recorder()
    live = live_factory(recorder)
    client = sdk(live)
    result = client.generate(
        model="llama3.2:1b", prompt="Why is the sky blue?", system="be brief", options={"num_predict": 9}
    )
    assert result.response == REPLY and result.done
    request = recorder.requests[-1]
    assert request.kind == "completion" and request.prompt == "Why is the sky blue?"
    assert request.extra["system"] == "be brief" and request.max_tokens == 9
    streamed = "".join(p.response for p in client.generate(model="llama3.2:1b", prompt="x", stream=True))
    assert streamed == REPLY


def test_options_and_keep_alive_map_into_the_request(live_factory: Any) -> None:
    recorder = Recorder()
    live = live_factory(recorder)
    sdk(live).chat(
        model="llama3.2:1b",
        messages=MSGS,
        keep_alive="10m",
        format="json",
        options={"num_ctx": 4096, "temperature": 0.2, "top_k": 30, "seed": 1, "stop": ["x"], "num_batch": 256},
    )
    request = recorder.requests[-1]
    assert request.dialect == "ollama"
    assert request.keep_alive == "10m"
    assert request.options["num_ctx"] == 4096 and request.options["num_batch"] == 256
    assert request.temperature == 0.2 and request.top_k == 30 and request.seed == 1 and request.stop == ["x"]
    assert request.response_format == {"type": "json_object"}


def test_tags_show_ps_version(live: LiveServer) -> None:
    client = sdk(live)
    names = {m.model for m in client.list().models}
    assert names == {"llama3.2:1b", "gemma3:270m"}
    shown = client.show("gemma3:270m")
    assert shown.modelinfo is not None and shown.modelinfo["gemma3.context_length"] == 32768
    assert shown.details is not None and shown.details.quantization_level == "Q4_K_M"
    client.chat(model="gemma3:270m", messages=MSGS)
    assert "gemma3:270m" in {m.model for m in client.ps().models}
    version = httpx.get(live.url + "/api/version", timeout=5).json()
    assert version["version"] and version["autotune"]


def test_ps_describes_a_loaded_model_as_tags_does(fake_ollama_factory: Any) -> None:
    """Through the real Ollama backend: /api/ps carries the upstream's details and digest, not blanks."""
    from autotune_plugins.backends.ollama import OllamaPlugin

    fake = fake_ollama_factory()
    config = settings()
    config.backend_order = ["ollama"]
    config.backends["ollama"] = {"url": fake.url}
    live = serve(PluginHost(config=config, plugins=[OllamaPlugin()], load_entrypoints=False, hardware=make_hardware()))
    try:
        client = sdk(live)
        model = fake.models[0].name
        client.chat(model=model, messages=MSGS)
        running = next(m for m in client.ps().models if m.model == model)
        listed = next(m for m in client.list().models if m.model == model)
        assert running.details == listed.details and running.digest == listed.digest
        assert running.details is not None and running.details.family and running.details.quantization_level
    finally:
        live.stop()


def test_show_leaves_out_what_the_backend_cannot_tell(fake_openai_factory: Any) -> None:
    """A generic OpenAI-compatible server tells little about its model: /api/show omits the unknown fields
    instead of reporting 0 layers or a null parameter count (clients size things from these)."""
    from autotune_plugins.backends.openai_compat import OpenAIPlugin

    fake = fake_openai_factory("generic")
    config = settings()
    config.backend_order = ["openai"]
    config.backends["openai"] = {"url": fake.url, "flavour": "generic"}
    live = serve(PluginHost(config=config, plugins=[OpenAIPlugin()], load_entrypoints=False, hardware=make_hardware()))
    try:
        shown = httpx.post(live.url + "/api/show", json={"model": fake.models[0].name}, timeout=10).json()
        assert "general.architecture" in shown["model_info"]
        assert all(value not in (0, None) for value in shown["model_info"].values()), shown["model_info"]
    finally:
        live.stop()


def test_embed_and_legacy_embeddings(live: LiveServer) -> None:
    client = sdk(live)
    embedded = client.embed(model="llama3.2:1b", input=["a b", "c"])
    assert len(embedded.embeddings) == 2 and len(embedded.embeddings[0]) == 32
    assert embedded.total_duration is not None and embedded.total_duration > 0  # nanoseconds, as Ollama
    legacy = client.embeddings(model="llama3.2:1b", prompt="a b")
    assert list(legacy.embedding) == pytest.approx(list(embedded.embeddings[0]))


def test_errors_are_ollama_shaped(live: LiveServer) -> None:
    client = sdk(live)
    with pytest.raises(ollama.ResponseError) as missing:
        client.chat(model="no-such-model", messages=MSGS)
    assert missing.value.status_code == 404 and "llama3.2:1b" in missing.value.error
    with pytest.raises(ollama.ResponseError) as streamed:
        list(client.chat(model="no-such-model", messages=MSGS, stream=True))
    assert streamed.value.status_code == 404
    response = httpx.post(
        live.url + "/api/chat", json={"model": "llama3.2:1b", "messages": [{"role": "robot"}]}, timeout=5
    )
    assert response.status_code == 400 and set(response.json()) == {"error"}
    assert "messages.0.role" in response.json()["error"]
    live.wait_idle()
