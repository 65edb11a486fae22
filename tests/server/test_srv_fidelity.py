"""Fidelity on the wire: what a client set explicitly reaches Ollama unchanged, autotune adds no sampling, a
safety guard that lowers a client's value says so, and Ollama's own metadata passes through verbatim.

The real default plugin stack (entry points) runs in front of the fake Ollama, which records every body.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from conftest import LiveServer, serve
from fakes.fake_ollama import FakeOllama
from fakes.models import FakeModel, default_models

from autotune_core.config import validate_settings
from autotune_core.host import PluginHost
from autotune_core.testing import make_hardware

MODEL = "llama3.2:1b"
#: every sampling field either door could carry
SAMPLING = {
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "typical_p",
    "repeat_penalty",
    "repeat_last_n",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "mirostat",
}
Door = tuple[str, Callable[..., dict[str, Any]]]


def ollama_body(stream: bool, options: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "Say hi"}], "stream": stream}
    if options is not None:
        body["options"] = options
    return {**body, **extra}


def openai_body(stream: bool, options: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say hi"}],
        "stream": stream,
        "max_tokens": 16,
    }
    if options is not None:
        body["options"] = options  # the OpenAI SDK's extra_body={"options": {...}}
    return {**body, **extra}


DOORS: list[Door] = [("/api/chat", ollama_body), ("/v1/chat/completions", openai_body)]


@pytest.fixture
def proxied(fake_ollama_factory: Callable[..., FakeOllama]) -> Iterator[Callable[..., tuple[LiveServer, FakeOllama]]]:
    """Live servers on every entry point before a fake Ollama: fidelity end to end through the real backend."""
    made: list[LiveServer] = []

    def make(
        *, ram_gib: float = 16, available_gib: float = 12, models: list[FakeModel] | None = None, **config: Any
    ) -> tuple[LiveServer, FakeOllama]:
        fake = fake_ollama_factory(models=models)
        raw: dict[str, Any] = {"backend_order": ["ollama"], "backends": {"ollama": {"url": fake.url}}, **config}
        host = PluginHost(
            config=validate_settings(raw, "<test>"),
            load_entrypoints=True,
            hardware=make_hardware(ram_gib, available_gib),
        )
        live = serve(host)
        made.append(live)
        return live, fake

    yield make
    for live in made:
        live.stop(wait=False)


def call(live: LiveServer, path: str, body: dict[str, Any]) -> tuple[httpx.Response, list[dict[str, Any]]]:
    """POST and return the response plus its JSON objects (one, or every NDJSON line / SSE event)."""
    response = httpx.post(live.url + path, json=body, timeout=20)
    assert response.status_code == 200, response.text
    if not body.get("stream"):
        return response, [response.json()]
    if path.startswith("/api"):
        return response, [json.loads(line) for line in response.text.splitlines() if line.strip()]
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    return response, [json.loads(event) for event in events if event != "[DONE]"]


def sent(fake: FakeOllama) -> dict[str, Any]:
    """The body of the last chat call Ollama received."""
    bodies = [r.json for r in fake.requests if r.path == "/api/chat"]
    assert bodies, "nothing reached /api/chat"
    return bodies[-1]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(("path", "build"), DOORS, ids=["ollama", "openai"])
def test_explicit_num_ctx_reaches_ollama_unchanged(
    proxied: Any, path: str, build: Callable[..., dict[str, Any]], stream: bool
) -> None:
    live, fake = proxied()
    response, _ = call(live, path, build(stream, {"num_ctx": 8192, "num_batch": 256, "num_thread": 3}))
    options = sent(fake)["options"]
    assert (options["num_ctx"], options["num_batch"], options["num_thread"]) == (8192, 256, 3)
    assert fake.loaded_context(MODEL) == 8192
    header = response.headers["x-autotune-plan"]
    assert "num_ctx=client>8192" in header and "ctx-sizing~" in header  # the plugin's proposal, traced, not applied
    assert "x-autotune-warning" not in response.headers


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(("path", "build"), DOORS, ids=["ollama", "openai"])
def test_no_sampling_is_added(proxied: Any, path: str, build: Callable[..., dict[str, Any]], stream: bool) -> None:
    live, fake = proxied()
    call(live, path, build(stream))
    body = sent(fake)
    assert not SAMPLING & set(body.get("options", {})), body.get("options")
    assert not SAMPLING & set(body)


@pytest.mark.parametrize(("path", "build"), DOORS, ids=["ollama", "openai"])
def test_client_sampling_is_forwarded_exactly(proxied: Any, path: str, build: Callable[..., dict[str, Any]]) -> None:
    live, fake = proxied()
    if path == "/api/chat":
        body = build(False, {"temperature": 0.3, "top_p": 0.5, "mirostat": 2})
    else:
        body = build(False, temperature=0.3, top_p=0.5)
    call(live, path, body)
    options = sent(fake)["options"]
    expected = {"temperature": 0.3, "top_p": 0.5} | ({"mirostat": 2} if path == "/api/chat" else {})
    assert {key: value for key, value in options.items() if key in SAMPLING} == expected


def test_client_keep_alive_and_max_tokens_reach_ollama_as_written(proxied: Any) -> None:
    live, fake = proxied()
    call(live, "/api/chat", ollama_body(False, {"num_predict": 7, "num_keep": 5}, keep_alive="5m"))
    body = sent(fake)
    assert body["keep_alive"] == "5m"  # the client's own text, not 300
    assert (body["options"]["num_predict"], body["options"]["num_keep"]) == (7, 5)


def test_tune_mode_hands_the_clients_knobs_to_the_plugins(proxied: Any) -> None:
    live, fake = proxied(client_overrides="tune")
    response, _ = call(live, "/api/chat", ollama_body(False, {"num_ctx": 8192}))
    assert sent(fake)["options"]["num_ctx"] < 8192  # sized by ctx-sizing / ctx-buckets
    assert "client>" not in response.headers["x-autotune-plan"]


def test_per_model_config_pins_a_knob_and_the_client_still_wins(proxied: Any) -> None:
    live, fake = proxied(server={"models": {MODEL: {"num_ctx": 6144}}})
    response, _ = call(live, "/api/chat", ollama_body(False))
    assert sent(fake)["options"]["num_ctx"] == 6144
    assert "num_ctx=config>6144" in response.headers["x-autotune-plan"]
    call(live, "/api/chat", ollama_body(False, {"num_ctx": 8192}))
    assert sent(fake)["options"]["num_ctx"] == 8192


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(("path", "build"), DOORS, ids=["ollama", "openai"])
def test_a_guard_lowering_a_clients_num_ctx_says_so(
    proxied: Any, path: str, build: Callable[..., dict[str, Any]], stream: bool
) -> None:
    # 2 GiB available: llama3.2:1b's weights (1.2 GiB) leave far too little for an f16 KV cache of 131072 tokens
    live, fake = proxied(ram_gib=4, available_gib=2.5)
    response, objects = call(live, path, build(stream, {"num_ctx": 131072}))
    got = sent(fake)["options"]["num_ctx"]
    assert got < 131072
    warning = response.headers["x-autotune-warning"]
    assert "num_ctx lowered from 131072" in warning and f"to {got} by noswap-guard" in warning
    notes = [obj["autotune"]["warnings"] for obj in objects if "autotune" in obj]
    assert len(notes) == 1 and "num_ctx lowered from 131072" in notes[0][0]  # on the final chunk / the answer
    final = objects[-1] if path == "/api/chat" else next(obj for obj in objects if "autotune" in obj)
    assert final.get("done", True) and ("choices" in final or path == "/api/chat")


def test_api_show_tags_and_ps_pass_ollamas_json_through(proxied: Any) -> None:
    models = default_models()
    models[0].extra_info = {
        "general.some_future_key": "kept",
        f"{models[0].architecture}.attention.key_length": 64,
        f"{models[0].architecture}.attention.value_length": 64,
    }
    live, fake = proxied(models=models)
    shown = httpx.post(live.url + "/api/show", json={"model": MODEL}, timeout=10).json()
    upstream = httpx.post(fake.url + "/api/show", json={"model": MODEL}, timeout=10).json()
    assert shown.pop("autotune") == {"backend": "ollama", "model": MODEL}
    assert shown == upstream  # every field: modelfile, parameters, template, license, all model_info keys
    assert shown["model_info"]["general.some_future_key"] == "kept"
    assert "llama.attention.key_length" in shown["model_info"]

    tags = httpx.get(live.url + "/api/tags", timeout=10).json()["models"]
    upstream_tags = httpx.get(fake.url + "/api/tags", timeout=10).json()["models"]
    from_ollama = [entry for entry in tags if entry["autotune"] == {"backend": "ollama"}]
    assert [{k: v for k, v in entry.items() if k != "autotune"} for entry in from_ollama] == upstream_tags

    call(live, "/api/chat", ollama_body(False))
    ps = httpx.get(live.url + "/api/ps", timeout=10).json()["models"]
    upstream_ps = httpx.get(fake.url + "/api/ps", timeout=10).json()["models"]
    from_ollama = [entry for entry in ps if entry["autotune"] == {"backend": "ollama"}]

    def same(entry: dict[str, Any]) -> dict[str, Any]:  # expires_at is "now + keep-alive", different per call
        return {k: v for k, v in entry.items() if k not in ("autotune", "expires_at")}

    assert [same(entry) for entry in from_ollama] == [same(entry) for entry in upstream_ps]
    assert all(set(entry) - {"autotune"} == set(up) for entry, up in zip(from_ollama, upstream_ps, strict=True))
    assert upstream_ps and upstream_ps[0]["name"].startswith(MODEL)
