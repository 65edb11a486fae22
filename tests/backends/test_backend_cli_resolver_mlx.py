"""Resolver across two backends, the backends/models/ps commands, and the MLX backend's translation."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from fakes import FakeOllama, FakeOpenAI

from autotune_core.backend import KnobScope
from autotune_core.cli import _build
from autotune_core.cli.common import reset_host
from autotune_core.config import load_settings
from autotune_core.errors import ModelNotFound
from autotune_core.host import PluginHost
from autotune_core.messages import ChatRequest, Message
from autotune_core.plan import Plan
from autotune_core.resolver import ModelResolver
from autotune_plugins.backends.mlx import DEFAULT_MAX_TOKENS, MLXBackend, platform_reason
from autotune_plugins.backends.ollama import OllamaPlugin
from autotune_plugins.backends.openai_compat import OpenAIPlugin


def two_backend_host(fake_ollama: FakeOllama, fake_openai: FakeOpenAI, **extra: Any) -> PluginHost:
    """The real ollama and openai backends against the fake servers, no fake backend: resolving across them."""
    settings = load_settings(
        overrides={"backends.ollama.url": fake_ollama.url, "backends.openai.url": fake_openai.url, **extra}, env={}
    )
    return PluginHost(config=settings, plugins=[OllamaPlugin(), OpenAIPlugin()], load_entrypoints=False)


async def test_resolver_across_two_backends(fake_ollama: FakeOllama, fake_openai: FakeOpenAI) -> None:
    host = two_backend_host(fake_ollama, fake_openai, aliases={"small": "openai/gemma-3-270m-it"})
    resolver = ModelResolver(host)
    try:
        backend, name = await resolver.resolve("llama3.2:1b")
        assert (backend.name, name) == ("ollama", "llama3.2:1b")
        backend, name = await resolver.resolve("nomic-embed-text")  # name:tag form, :latest implied
        assert (backend.name, name) == ("ollama", "nomic-embed-text:latest")
        backend, name = await resolver.resolve("GEMMA-3-270M-IT")  # only the OpenAI server has it
        assert (backend.name, name) == ("openai", "gemma-3-270m-it")
        backend, name = await resolver.resolve("small")  # alias with an explicit backend prefix
        assert (backend.name, name) == ("openai", "gemma-3-270m-it")
        with pytest.raises(ModelNotFound) as missing:
            await resolver.resolve("mistral:7b")
        assert "llama3.2:1b" in missing.value.available and "gemma-3-270m-it" in missing.value.available
    finally:
        await host.stop()


def test_cli_backends_models_ps(
    fake_ollama: FakeOllama, fake_llama_server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOTUNE_OLLAMA_URL", fake_ollama.url)
    monkeypatch.setenv("AUTOTUNE_OPENAI_URL", fake_llama_server.url)
    monkeypatch.setenv("AUTOTUNE_LOAD_PLUGINS", "ollama,openai")
    reset_host()
    try:
        cli = _build()
        runner = CliRunner()
        result = runner.invoke(cli, ["backends", "--json"])
        assert result.exit_code == 0, result.output
        data = {d["name"]: d for d in json.loads(result.output)}
        assert data["ollama"]["reachable"] and data["ollama"]["version"] == "0.30.2"
        assert data["openai"]["flavour"] == "llama-server"
        assert data["ollama"]["knobs"]["kv_type"]["scope"] == "server_env"
        assert data["openai"]["knobs"]["num_ctx"]["how"].startswith("llama-server -c")
        text = runner.invoke(cli, ["backends"]).output
        assert "ollama" in text and "load*" in text
        models = json.loads(runner.invoke(cli, ["models", "--json"]).output)
        assert {"llama3.2:1b", "llama-3.2-1b-instruct"} <= {m["name"] for m in models}
        ps = json.loads(runner.invoke(cli, ["ps", "--json"]).output)
        assert [(m["backend"], m["context_length"]) for m in ps] == [("openai", 4096)]
        assert "llama-3.2-1b-instruct" in runner.invoke(cli, ["models"]).output
    finally:
        reset_host()


def test_mlx_is_unavailable_off_apple_silicon_with_reason() -> None:
    import asyncio

    backend = MLXBackend({})
    availability = asyncio.run(backend.available())
    if platform_reason() is not None:
        assert not availability.ok and availability.reason == platform_reason()
    caps = backend.capabilities()
    assert caps.scope("num_ctx") is KnobScope.UNSUPPORTED and caps.scope("kv_type") is KnobScope.UNSUPPORTED


def test_mlx_option_translation() -> None:
    backend = MLXBackend({})
    request = ChatRequest(
        model="mlx-community/gemma", messages=[Message(role="user", content="hi")], temperature=0.3, stop=["END"]
    )
    body = backend.build_body(request, Plan(model="x", num_ctx=8192, sampling={"top_p": 0.9}), stream=True)
    assert body["max_tokens"] == DEFAULT_MAX_TOKENS  # the server's default (512) would cut answers
    assert body["temperature"] == 0.3 and body["top_p"] == 0.9 and body["stop"] == ["END"]
    assert "num_ctx" not in body and "cache_prompt" not in body and "options" not in body
    assert body["stream_options"] == {"include_usage": True}
    explicit = backend.build_body(request.model_copy(update={"max_tokens": 50}), Plan(model="x"), stream=False)
    assert explicit["max_tokens"] == 50


async def test_mlx_talks_to_an_openai_compatible_server(fake_openai: FakeOpenAI) -> None:
    backend = MLXBackend({"url": fake_openai.url, "timeout": 5})
    try:
        assert (await backend.available()).ok
        result = await backend.chat(
            ChatRequest(model="llama-3.2-1b-instruct", messages=[Message(role="user", content="hi")]), Plan(model="x")
        )
    finally:
        await backend.aclose()
    assert result.content == fake_openai.response_text
    assert fake_openai.requests_to("/v1/chat/completions")[0].json["max_tokens"] == DEFAULT_MAX_TOKENS
