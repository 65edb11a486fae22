"""The fake model servers behave as the real ones are documented to (docs/backend-facts.md)."""

from __future__ import annotations

import base64
import math
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import (
    FLAVOURS,
    FakeModel,
    FakeOllama,
    FakeOpenAI,
    default_models,
    ndjson_lines,
    parse_go_duration,
    parse_sse,
    run_fake_ollama,
    run_fake_openai,
)
from fakes.fixtures import *  # noqa: F403

TIMEOUT = httpx.Timeout(5.0)
HELLO = [{"role": "user", "content": "Hello there, how are you?"}]


def client(fake: Any, timeout: httpx.Timeout | float = TIMEOUT) -> httpx.Client:
    return httpx.Client(base_url=fake.url, timeout=timeout)


def chat(c: httpx.Client, **body: Any) -> httpx.Response:
    body.setdefault("model", "llama3.2:1b")
    body.setdefault("messages", HELLO)
    return c.post("/api/chat", json=body)


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / (
        math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    )


# ----------------------------------------------------------------------------------------------------
# runner


def test_start_is_fast_and_tiny_chat_is_sub_millisecond_ish() -> None:
    t0 = time.perf_counter()
    with run_fake_ollama() as fake:
        assert time.perf_counter() - t0 < 0.5
        assert fake.url.startswith("http://127.0.0.1:")
        with client(fake) as c:
            chat(c, stream=False)
            times = []
            for _ in range(30):
                t = time.perf_counter()
                assert chat(c, stream=False).status_code == 200
                times.append(time.perf_counter() - t)
    times.sort()
    assert times[len(times) // 2] < 0.005  # client included; the server itself takes ~0.1 ms


def test_requests_are_recorded(fake_ollama: FakeOllama) -> None:
    with client(fake_ollama) as c:
        chat(c, stream=False, options={"temperature": 0.1})
        c.get("/api/tags")
    method, path, body = fake_ollama.requests[0]
    assert (method, path) == ("POST", "/api/chat")
    assert body["options"] == {"temperature": 0.1}
    assert fake_ollama.requests[0].headers["content-type"] == "application/json"
    assert [r.path for r in fake_ollama.requests] == ["/api/chat", "/api/tags"]
    assert fake_ollama.last_request("/api/chat").json["stream"] is False


def test_chunked_request_body_and_head(fake_ollama: FakeOllama) -> None:
    parts = [
        b'{"model": "llama3.2:1b", ',
        b'"stream": false, "messages": [{"role": "user", "content": "hi"}]}',
    ]
    with client(fake_ollama) as c:
        r = c.post("/api/chat", content=iter(parts))  # sent with Transfer-Encoding: chunked
        head = c.head("/")
        after = c.get("/")  # same keep-alive connection: HEAD must not have sent a body
    assert r.status_code == 200 and r.json()["message"]["content"] == fake_ollama.response_text
    assert fake_ollama.requests[0].headers["transfer-encoding"] == "chunked"
    assert head.status_code == 200 and head.content == b""
    assert after.text == "Ollama is running"


# ----------------------------------------------------------------------------------------------------
# Ollama: chat, generate, options, reloads


def test_ollama_chat_streams_ndjson_with_ns_timings(fake_ollama: FakeOllama) -> None:
    fake_ollama.response_text = "The sky is blue because of Rayleigh scattering."
    with client(fake_ollama) as c:
        r = chat(c)  # stream defaults to true
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-ndjson"
    lines = ndjson_lines(r.content)
    assert len(lines) > 3
    body, final = lines[:-1], lines[-1]
    assert all(x["done"] is False and x["message"]["role"] == "assistant" for x in body)
    assert "".join(x["message"]["content"] for x in body) == fake_ollama.response_text
    assert final["done"] is True and final["done_reason"] == "stop"
    assert final["message"] == {"role": "assistant", "content": ""}
    for key in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(final[key], int)
    assert final["load_duration"] == 250_000_000  # first load, in nanoseconds
    assert final["total_duration"] > final["load_duration"] + final["eval_duration"]
    assert final["eval_count"] == len(body)
    assert final["prompt_eval_count"] > 0
    assert fake_ollama.loads == 1 and fake_ollama.reloads == 0


def test_ollama_non_streaming_and_generate(fake_ollama: FakeOllama) -> None:
    with client(fake_ollama) as c:
        r = chat(c, stream=False)
        g = c.post("/api/generate", json={"model": "llama3.2:1b", "prompt": "Why?", "stream": False})
        gs = ndjson_lines(c.post("/api/generate", json={"model": "llama3.2:1b", "prompt": "Why?"}).content)
    msg = r.json()
    assert msg["done"] is True and msg["message"]["content"] == fake_ollama.response_text
    assert msg["load_duration"] > 100_000_000
    gen = g.json()
    assert gen["response"] == fake_ollama.response_text and isinstance(gen["context"], list)
    assert gen["load_duration"] < 1_000_000  # already loaded
    assert "".join(x["response"] for x in gs) == fake_ollama.response_text and gs[-1]["done"]


def test_ollama_unknown_options_are_ignored(fake_ollama: FakeOllama) -> None:
    with client(fake_ollama) as c:
        r = chat(c, stream=False, options={"flash_attn": True, "f16_kv": True, "kv_cache_type": "q8_0"})
        r2 = chat(c, stream=False, options={"flash_attn": False})
    assert r.status_code == 200 and r2.status_code == 200
    assert fake_ollama.ignored_options == ["flash_attn", "f16_kv", "kv_cache_type", "flash_attn"]
    assert fake_ollama.reloads == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_ctx": "8192"}, 'option "num_ctx" must be of type integer'),
        ({"temperature": "hot"}, 'option "temperature" must be of type float32'),
        ({"use_mmap": 1}, 'option "use_mmap" must be of type boolean'),
        ({"stop": "x"}, 'option "stop" must be of type array'),
    ],
)
def test_ollama_wrong_option_type_is_500(fake_ollama: FakeOllama, options: dict[str, Any], message: str) -> None:
    with client(fake_ollama) as c:
        r = chat(c, stream=False, options=options)
    assert r.status_code == 500
    assert r.json() == {"error": message}


def test_ollama_reload_on_num_ctx_change_and_on_omission(fake_ollama: FakeOllama) -> None:
    with client(fake_ollama) as c:
        chat(c, stream=False, options={"num_ctx": 8192})
        assert fake_ollama.loads == 1 and fake_ollama.reloads == 0
        chat(c, stream=False, options={"num_ctx": 8192})
        assert fake_ollama.reloads == 0
        r = chat(c, stream=False, options={"num_ctx": 16384})
        assert fake_ollama.reloads == 1 and r.json()["load_duration"] == 250_000_000
        assert fake_ollama.loaded_context("llama3.2:1b") == 16384
        chat(c, stream=False)  # omitted -> default 4096 -> reload
        assert fake_ollama.reloads == 2
        assert fake_ollama.loaded_context("llama3.2:1b") == 4096
        chat(c, stream=False, options={"num_ctx": 4096})  # the same as the default: no reload
        chat(c, stream=False, options={"num_gpu": -1})  # -1 == omitted
        assert fake_ollama.reloads == 2
        chat(c, stream=False, options={"num_ctx": 4096, "num_batch": 1024})
        assert fake_ollama.reloads == 3
    kinds = [(e.kind, e.reason) for e in fake_ollama.load_events]
    assert kinds == [("load", ""), ("reload", "num_ctx"), ("reload", "num_ctx"), ("reload", "num_batch")]


def test_ollama_no_reload_for_keep_alive_or_predict_options(fake_ollama: FakeOllama) -> None:
    with client(fake_ollama) as c:
        chat(c, stream=False, options={"num_ctx": 8192, "temperature": 0.1}, keep_alive="5m")
        chat(c, stream=False, options={"num_ctx": 8192, "temperature": 0.9, "top_k": 5, "num_keep": 64})
        chat(c, stream=False, options={"num_ctx": 8192, "seed": 1}, keep_alive=-1)
        chat(c, stream=False, options={"num_ctx": 8192}, keep_alive=3600)
    assert fake_ollama.loads == 1 and fake_ollama.reloads == 0


def test_ollama_shift_reloads_only_from_v030(fake_ollama_factory: Callable[..., FakeOllama]) -> None:
    new, old = fake_ollama_factory(), fake_ollama_factory(version="0.24.0")
    for fake in (new, old):
        with client(fake) as c:
            chat(c, stream=False)
            chat(c, stream=False, shift=False)
            assert c.get("/api/version").json() == {"version": fake.version}
    assert new.reloads == 1 and old.reloads == 0


def test_ollama_num_ctx_clamped_to_trained_context(fake_ollama: FakeOllama) -> None:
    with client(fake_ollama) as c:
        chat(c, model="gemma3:270m", stream=False, options={"num_ctx": 65536})
        ps = c.get("/api/ps").json()["models"]
    assert [(m["name"], m["context_length"]) for m in ps] == [("gemma3:270m", 32768)]
    assert ps[0]["size_vram"] == ps[0]["size"] > 291_554_930  # weights + KV


def test_ollama_keep_alive(fake_ollama: FakeOllama) -> None:
    with client(fake_ollama) as c:
        bad = chat(c, stream=False, keep_alive="3600")
        assert bad.status_code == 400
        assert bad.json() == {"error": 'time: missing unit in duration "3600"'}
        assert chat(c, stream=False, keep_alive="-1m").status_code == 200
        expires = c.get("/api/ps").json()["models"][0]["expires_at"]
        assert int(expires[:4]) > 2300  # forever
        assert chat(c, stream=False, keep_alive=0).status_code == 200
        assert c.get("/api/ps").json()["models"] == []  # unloaded after the request
        load = chat(c, messages=[], keep_alive="10m").json()
        assert load["done_reason"] == "load" and load["done"] is True
        assert fake_ollama.loaded_context("llama3.2:1b") == 4096
        unload = chat(c, messages=[], keep_alive=0).json()
        assert unload["done_reason"] == "unload"
        assert c.get("/api/ps").json()["models"] == []
    assert fake_ollama.loads == 2 and fake_ollama.unloads == 2


def test_go_duration_parsing() -> None:
    assert parse_go_duration("5m") == 300
    assert parse_go_duration("1h30m") == 5400
    assert parse_go_duration("-1m") == -60
    assert parse_go_duration("0") == 0
    assert parse_go_duration("300ms") == pytest.approx(0.3)
    for bad in ("3600", "5x", "", "m"):
        with pytest.raises(ValueError):
            parse_go_duration(bad)


def test_ollama_prefix_cache_shows_in_prompt_eval_duration(fake_ollama: FakeOllama) -> None:
    system = {"role": "system", "content": "You are a careful assistant. " * 40}
    turn1 = [system, {"role": "user", "content": "first question"}]
    turn2 = [
        *turn1,
        {"role": "assistant", "content": fake_ollama.response_text},
        {"role": "user", "content": "second question"},
    ]
    other = [{"role": "system", "content": "Different. " * 40}, {"role": "user", "content": "q"}]
    with client(fake_ollama) as c:
        cold = chat(c, stream=False, messages=turn1).json()
        warm = chat(c, stream=False, messages=turn2).json()
        miss = chat(c, stream=False, messages=other).json()
    assert warm["prompt_eval_count"] > cold["prompt_eval_count"]  # full prompt is counted
    assert warm["prompt_eval_duration"] < cold["prompt_eval_duration"] / 5  # but mostly cached
    assert miss["prompt_eval_duration"] > warm["prompt_eval_duration"] * 5


def test_ollama_v0300_counts_only_uncached_prompt(fake_ollama_factory: Callable[..., FakeOllama]) -> None:
    fake = fake_ollama_factory(version="0.30.0")
    with client(fake) as c:
        a = chat(c, stream=False).json()
        b = chat(c, stream=False).json()
    assert b["prompt_eval_count"] == 1 < a["prompt_eval_count"]


def test_ollama_tool_calls(fake_ollama: FakeOllama) -> None:
    fake_ollama.tool_calls = [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    with client(fake_ollama) as c:
        r = chat(c, stream=False, tools=tools).json()
        lines = ndjson_lines(chat(c, tools=tools).content)
        plain = chat(c, stream=False).json()  # no tools offered -> text
        gemma = chat(c, model="gemma3:270m", stream=False, tools=tools)
    call = r["message"]["tool_calls"][0]["function"]
    assert call["name"] == "get_weather" and call["arguments"] == {"city": "Paris"}
    assert any("tool_calls" in x["message"] for x in lines) and lines[-1]["done"]
    assert plain["message"]["content"] == fake_ollama.response_text
    assert gemma.status_code == 400 and "does not support tools" in gemma.json()["error"]


def test_ollama_thinking(fake_ollama_factory: Callable[..., FakeOllama]) -> None:
    thinker = FakeModel(name="qwen3:0.6b", architecture="qwen3", capabilities=["completion", "thinking"])
    fake = fake_ollama_factory(models=[thinker, *default_models()], thinking_text="Let me think.")
    with client(fake) as c:
        r = chat(c, model="qwen3:0.6b", stream=False, think=True).json()
        lines = ndjson_lines(chat(c, model="qwen3:0.6b", think=True).content)
        no = chat(c, stream=False, think=True)
    assert r["message"]["thinking"] == "Let me think." and r["message"]["content"] == fake.response_text
    assert "".join(x["message"].get("thinking", "") for x in lines) == "Let me think."
    assert no.status_code == 400 and no.json() == {"error": '"llama3.2:1b" does not support thinking'}


def test_ollama_unknown_model_and_embedding_only_model(fake_ollama: FakeOllama) -> None:
    with client(fake_ollama) as c:
        r = chat(c, model="nope:1b", stream=False)
        e = chat(c, model="nomic-embed-text", stream=False)
    assert r.status_code == 404 and r.json() == {"error": 'model "nope:1b" not found, try pulling it first'}
    assert e.status_code == 400 and "does not support chat" in e.json()["error"]


def test_ollama_show_tags_ps_version(fake_ollama: FakeOllama) -> None:
    with client(fake_ollama) as c:
        llama = c.post("/api/show", json={"model": "llama3.2:1b"}).json()
        gemma = c.post("/api/show", json={"model": "gemma3:270m"}).json()
        missing = c.post("/api/show", json={"model": "x"})
        tags = c.get("/api/tags").json()["models"]
        version = c.get("/api/version").json()
    info = llama["model_info"]
    assert info["general.architecture"] == "llama"
    assert info["llama.block_count"] == 16 and info["llama.attention.head_count"] == 32
    assert info["llama.attention.head_count_kv"] == 8 and info["llama.embedding_length"] == 2048
    assert info["llama.context_length"] == 131072 and "llama.attention.key_length" not in info
    g = gemma["model_info"]
    assert g["gemma3.attention.key_length"] == g["gemma3.attention.value_length"] == 256
    assert g["gemma3.attention.sliding_window"] == 512 and g["gemma3.attention.head_count_kv"] == 1
    assert gemma["details"]["family"] == "gemma3" and gemma["details"]["quantization_level"] == "Q8_0"
    assert "completion" in gemma["capabilities"] and "stop" in gemma["parameters"]
    assert missing.status_code == 404 and missing.json() == {"error": "model 'x' not found"}
    names = {t["name"]: t for t in tags}
    assert set(names) == {"llama3.2:1b", "gemma3:270m", "nomic-embed-text:latest"}
    assert names["gemma3:270m"]["details"]["context_length"] == 32768
    assert names["nomic-embed-text:latest"]["capabilities"] == ["embedding"]
    assert version == {"version": "0.30.2"}


def test_ollama_embeddings(fake_ollama: FakeOllama) -> None:
    texts = ["the cat sat on the mat", "the cat sat on a mat", "quarterly revenue grew strongly"]
    with client(fake_ollama) as c:
        r = c.post("/api/embed", json={"model": "nomic-embed-text", "input": texts}).json()
        single = c.post("/api/embed", json={"model": "nomic-embed-text", "input": texts[0]}).json()
        legacy = c.post("/api/embeddings", json={"model": "nomic-embed-text", "prompt": texts[0]}).json()
    a, b, z = r["embeddings"]
    assert len(a) == 64 and cosine(a, a) == pytest.approx(1.0)
    assert cosine(a, b) > 0.7 > cosine(a, z)
    assert single["embeddings"] == [a] and legacy["embedding"] == a
    assert r["prompt_eval_count"] > 0 and r["load_duration"] > 0
    assert fake_ollama.loaded_context("nomic-embed-text") == 2048  # Modelfile 8192, clamped to trained ctx


def test_ollama_v1_drops_options_and_runs_at_default_context(fake_ollama: FakeOllama) -> None:
    with client(fake_ollama) as c:
        chat(c, stream=False, options={"num_ctx": 8192})
        r = c.post(
            "/v1/chat/completions",
            json={
                "model": "llama3.2:1b",
                "messages": HELLO,
                "options": {"num_ctx": 8192},
                "keep_alive": -1,
                "temperature": 0.2,
            },
        )
        models = c.get("/v1/models").json()
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == fake_ollama.response_text
    assert body["usage"]["prompt_tokens"] > 0
    assert fake_ollama.dropped_on_v1 == ["options", "keep_alive"]
    assert fake_ollama.reloads == 1  # back to the default context
    assert fake_ollama.loaded_context("llama3.2:1b") == 4096
    assert {m["id"] for m in models["data"]} >= {"llama3.2:1b", "gemma3:270m"}


# ----------------------------------------------------------------------------------------------------
# OpenAI-compatible flavours


def oa_chat(c: httpx.Client, **body: Any) -> httpx.Response:
    body.setdefault("model", "llama-3.2-1b-instruct")
    body.setdefault("messages", HELLO)
    return c.post("/v1/chat/completions", json=body)


def test_sse_format_and_done(fake_openai: FakeOpenAI) -> None:
    fake_openai.tokens_per_chunk = 2
    with client(fake_openai) as c:
        r = oa_chat(c, stream=True)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    raw = r.text
    assert raw.endswith("data: [DONE]\n\n")
    assert all(block.startswith("data: ") for block in raw.split("\n\n") if block)
    events = parse_sse(raw)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(e["object"] == "chat.completion.chunk" for e in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in chunks)
    assert text == fake_openai.response_text
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert not any("usage" in e for e in chunks)  # no include_usage


def test_include_usage_and_cached_tokens(fake_openai: FakeOpenAI) -> None:
    with client(fake_openai) as c:
        oa_chat(c)
        r = oa_chat(c, stream=True, stream_options={"include_usage": True})
        plain = oa_chat(c).json()
    events = parse_sse(r.text)
    usage_chunk = events[-2]
    assert usage_chunk["choices"] == []
    usage = usage_chunk["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert 0 < usage["prompt_tokens_details"]["cached_tokens"] < usage["prompt_tokens"]
    assert plain["usage"]["prompt_tokens_details"]["cached_tokens"] == usage["prompt_tokens"] - 1


def test_openai_tool_calls_stop_seed_response_format(fake_openai: FakeOpenAI) -> None:
    fake_openai.tool_calls = [{"name": "lookup", "arguments": {"q": "weather in Paris"}}]
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    with client(fake_openai) as c:
        full = oa_chat(c, tools=tools).json()
        events = parse_sse(oa_chat(c, tools=tools, stream=True).text)[:-1]
        fake_openai.tool_calls = None
        stopped = oa_chat(c, stop=["help"], seed=7).json()
        as_json = oa_chat(c, response_format={"type": "json_object"}).json()
        limited = oa_chat(c, max_tokens=2).json()
    call = full["choices"][0]["message"]["tool_calls"][0]
    assert full["choices"][0]["finish_reason"] == "tool_calls"
    assert call["type"] == "function" and call["function"]["name"] == "lookup"
    assert call["function"]["arguments"] == '{"q": "weather in Paris"}'
    deltas = [d for e in events for d in e["choices"][0]["delta"].get("tool_calls", [])] if events else []
    assert all(d["index"] == 0 for d in deltas) and deltas[0]["id"].startswith("call_")
    assert deltas[0]["function"]["name"] == "lookup" and all("id" not in d for d in deltas[1:])
    assert "".join(d["function"].get("arguments", "") for d in deltas) == call["function"]["arguments"]
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert stopped["choices"][0]["message"]["content"] == "Hello! How can I "
    assert fake_openai.requests_to("/v1/chat/completions")[2].json["seed"] == 7
    assert as_json["choices"][0]["message"]["content"].startswith("{")
    assert limited["choices"][0]["finish_reason"] == "length" and limited["usage"]["completion_tokens"] == 2


def test_openai_completions_and_embeddings(fake_openai: FakeOpenAI) -> None:
    with client(fake_openai) as c:
        comp = c.post("/v1/completions", json={"model": "llama-3.2-1b-instruct", "prompt": "Once"}).json()
        stream = parse_sse(c.post("/v1/completions", json={"prompt": "Once", "stream": True}).text)
        emb_body = {"model": "text-embedding-nomic-embed-text", "input": ["a b", "a b"]}
        emb = c.post("/v1/embeddings", json=emb_body)
        b64 = c.post("/v1/embeddings", json={"input": "a b", "encoding_format": "base64"}).json()
    assert comp["object"] == "text_completion" and comp["choices"][0]["text"] == fake_openai.response_text
    assert "".join(e["choices"][0]["text"] for e in stream[:-1]) == fake_openai.response_text
    data = emb.json()["data"]
    assert [d["index"] for d in data] == [0, 1] and data[0]["embedding"] == data[1]["embedding"]
    raw = base64.b64decode(b64["data"][0]["embedding"])
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert decoded == pytest.approx(data[0]["embedding"], abs=1e-6)


def test_llama_server_props_slots_tokenize_health(fake_openai_factory: Callable[..., FakeOpenAI]) -> None:
    fake = fake_openai_factory("llama-server", n_ctx=8192, n_slots=2)
    with client(fake) as c:
        assert c.get("/health").json() == {"status": "ok"}
        props = c.get("/props").json()
        slots = c.get("/slots").json()
        tok = c.post("/tokenize", json={"content": "Hello world, how are you?"}).json()
        with_pieces = c.post("/tokenize", json={"content": "Hello world", "with_pieces": True}).json()
        detok = c.post("/detokenize", json={"tokens": tok["tokens"]}).json()
        models = c.get("/v1/models").json()
    assert props["default_generation_settings"]["n_ctx"] == 4096  # 8192 over 2 slots
    assert props["total_slots"] == 2 and props["model_path"].endswith(".gguf") and props["build_info"]
    assert [(s["id"], s["n_ctx"], s["is_processing"]) for s in slots] == [(0, 4096, False), (1, 4096, False)]
    assert all(isinstance(t, int) for t in tok["tokens"]) and len(tok["tokens"]) >= 6
    assert "".join(p["piece"] for p in with_pieces["tokens"]) == "Hello world"
    assert detok["content"] == "Hello world, how are you?"
    assert models["data"][0]["meta"]["n_ctx_train"] == 131072


def test_llama_server_timings_cache_and_context_error(fake_llama_server: FakeOpenAI) -> None:
    with client(fake_llama_server) as c:
        first = oa_chat(c).json()
        second = oa_chat(c, cache_prompt=True, n_keep=-1).json()
        no_cache = oa_chat(c, cache_prompt=False).json()
        too_long = oa_chat(c, messages=[{"role": "user", "content": "word " * 5000}])
        loading_fake = fake_llama_server.set(loading=True)
        loading = c.get("/health")
        loading_fake.loading = False
    t1, t2 = first["timings"], second["timings"]
    assert t1["cache_n"] == 0 and t1["prompt_n"] == first["usage"]["prompt_tokens"]
    assert t2["cache_n"] == second["usage"]["prompt_tokens"] - 1 and t2["prompt_n"] == 1
    assert t2["prompt_ms"] < t1["prompt_ms"] and t1["predicted_n"] == first["usage"]["completion_tokens"]
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] == t2["cache_n"]
    assert no_cache["timings"]["cache_n"] == 0
    assert too_long.status_code == 400
    err = too_long.json()["error"]
    assert err["type"] == "exceed_context_size_error" and err["code"] == 400 and err["n_ctx"] == 4096
    assert "exceeds the available context size" in err["message"]
    assert loading.status_code == 503


def test_llama_server_native_completion_warmup(fake_llama_server: FakeOpenAI) -> None:
    with client(fake_llama_server) as c:
        prefix = "A long shared system prompt. " * 20
        warm = c.post("/completion", json={"prompt": prefix, "n_predict": 0}).json()
        hit = c.post("/completion", json={"prompt": prefix + "Question?"}).json()
    assert warm["content"] == "" and warm["tokens_predicted"] == 0 and warm["stop"] is True
    assert hit["timings"]["cache_n"] >= warm["tokens_evaluated"] - 1


def test_lmstudio_load_changes_context(fake_lmstudio: FakeOpenAI) -> None:
    with client(fake_lmstudio) as c:
        before = c.get("/api/v1/models").json()["models"]
        assert all(m["loaded_instances"] == [] for m in before)
        r = c.post(
            "/api/v1/models/load",
            json={
                "model": "llama-3.2-1b-instruct",
                "context_length": 8192,
                "flash_attention": True,
                "eval_batch_size": 1024,
                "echo_load_config": True,
            },
        )
        assert r.status_code == 200 and r.json()["load_config"]["context_length"] == 8192
        after = {m["key"]: m for m in c.get("/api/v1/models").json()["models"]}
        inst = after["llama-3.2-1b-instruct"]["loaded_instances"][0]
        assert inst["config"]["context_length"] == 8192 and inst["config"]["eval_batch_size"] == 1024
        c.post("/api/v1/models/load", json={"model": "llama-3.2-1b-instruct", "context_length": 16384})
        assert fake_lmstudio.context_of("llama-3.2-1b-instruct") == 16384
        v0 = {m["id"]: m for m in c.get("/api/v0/models").json()["data"]}
        assert v0["llama-3.2-1b-instruct"]["loaded_context_length"] == 16384
        kv = c.post(
            "/api/v1/models/load",
            json={"model": "llama-3.2-1b-instruct", "llamaKCacheQuantizationType": "q8_0"},
        )
        assert kv.status_code == 400 and "llamaKCacheQuantizationType" in kv.json()["error"]["message"]
        un = c.post("/api/v1/models/unload", json={"instance_id": "llama-3.2-1b-instruct"})
        assert un.status_code == 200 and fake_lmstudio.context_of("llama-3.2-1b-instruct") is None
        jit = oa_chat(c, model="google/gemma-3-270m", ttl=600)
        assert jit.status_code == 200
        assert fake_lmstudio.instances["google/gemma-3-270m"].ttl == 600
        assert "prompt_tokens_details" not in jit.json()["usage"]
        odd = c.get("/api/version")
        assert odd.status_code == 200 and "Unexpected endpoint" in odd.json()["error"]
    assert fake_lmstudio.loads == 2 and fake_lmstudio.reloads == 1 and fake_lmstudio.unloads == 1


def test_vllm_models_metrics_version_block_cache(fake_vllm: FakeOpenAI) -> None:
    model = "meta-llama/Llama-3.2-1B-Instruct"
    long = [{"role": "system", "content": "Be brief. " * 60}, {"role": "user", "content": "hi"}]
    with client(fake_vllm) as c:
        models = c.get("/v1/models").json()["data"]
        oa_chat(c, model=model, messages=long)
        second = oa_chat(c, model=model, messages=long).json()
        metrics = c.get("/metrics").text
        version = c.get("/version").json()
        missing = oa_chat(c, model="nope")
        too_long = oa_chat(c, model=model, max_tokens=4000, messages=long)
    assert models[0]["id"] == model and models[0]["max_model_len"] == 4096
    cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached > 0 and cached % 16 == 0
    assert "vllm:prefix_cache_hits_total" in metrics and "vllm:num_requests_running" in metrics
    assert version["version"]
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "NotFoundError"
    assert too_long.status_code == 400
    assert "maximum context length is 4096" in too_long.json()["error"]["message"]


def test_lemonade_load_reload_health(fake_lemonade: FakeOpenAI) -> None:
    name = "Llama-3.2-1B-Instruct-GGUF"
    with client(fake_lemonade) as c:
        assert c.get("/api/v1/health").json()["all_models_loaded"] == []
        assert c.post("/api/v1/load", json={"model_name": name, "ctx_size": 8192}).status_code == 200
        health = c.get("/api/v1/health").json()
        assert health == c.get("/v1/health").json()
        loaded = health["all_models_loaded"][0]
        assert loaded["model_name"] == name and loaded["recipe_options"]["ctx_size"] == 8192
        assert "--ctx-size 8192" in loaded["launch_command"]
        c.post("/api/v1/load", json={"model_name": name, "ctx_size": 8192})  # same options: no reload
        assert fake_lemonade.reloads == 0
        args = "-ctk q8_0 -ctv q8_0 -fa on"
        c.post("/v1/load", json={"model_name": name, "ctx_size": 8192, "llamacpp_args": args})
        assert fake_lemonade.reloads == 1
        bad = c.post("/api/v1/load", json={"model_name": name, "llamacpp_args": "--ctx-size 4"})
        assert bad.status_code == 400
        r = oa_chat(c, model=name).json()
        assert r["timings"]["prompt_n"] > 0
        assert c.get("/api/v1/stats").json()["input_tokens"] == r["usage"]["prompt_tokens"]
        assert c.post("/api/v1/unload", json={"model_name": name}).status_code == 200
        assert c.get("/api/v1/health").json()["all_models_loaded"] == []
        auto = oa_chat(c, model="Gemma-3-270m-it-GGUF")  # auto-load with ctx_size -1
        assert auto.status_code == 200 and fake_lemonade.context_of("Gemma-3-270m-it-GGUF") == 4096


def test_any_flavour_speaks_basic_openai(any_fake_openai: FakeOpenAI) -> None:
    model = any_fake_openai.models[0].name
    with client(any_fake_openai) as c:
        r = oa_chat(c, model=model)
        s = parse_sse(oa_chat(c, model=model, stream=True).text)
        m = c.get("/v1/models").json()
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == any_fake_openai.response_text
    assert s[-1] == "[DONE]"
    assert model in {x["id"] for x in m["data"]}


# ----------------------------------------------------------------------------------------------------
# failure injection and timing knobs


def test_fail_mid_stream_closes_connection(fake_ollama: FakeOllama) -> None:
    fake_ollama.fail_mid_stream_after = 3
    got: list[bytes] = []
    body = {"model": "llama3.2:1b", "messages": HELLO}
    with (
        client(fake_ollama) as c,
        pytest.raises(httpx.RemoteProtocolError),
        c.stream("POST", "/api/chat", json=body) as r,
    ):
        for line in r.iter_lines():
            got.append(line.encode())
    assert len(got) == 3


def test_error_mid_stream_sends_in_band_error(fake_openai: FakeOpenAI, fake_ollama: FakeOllama) -> None:
    fake_ollama.error_mid_stream_after = 2
    fake_openai.error_mid_stream_after = 2
    with client(fake_ollama) as c:
        lines = ndjson_lines(chat(c).content)
    assert len(lines) == 3 and "error" in lines[-1]
    with client(fake_openai) as c:
        events = parse_sse(oa_chat(c, stream=True).text)
    assert len(events) == 3 and events[-1]["error"]["message"]


def test_status_override_and_count(fake_ollama: FakeOllama) -> None:
    fake_ollama.set(status_override=503, status_override_count=1)
    with client(fake_ollama) as c:
        first = chat(c, stream=False)
        second = chat(c, stream=False)
        fake_ollama.status_override = (429, {"error": "slow down"})
        fake_ollama.status_override_count = None
        third = chat(c, stream=False)
        tags = c.get("/api/tags")  # not an inference endpoint
    assert first.status_code == 503 and "error" in first.json()
    assert second.status_code == 200
    assert third.status_code == 429 and third.json() == {"error": "slow down"}
    assert tags.status_code == 200


def test_hang_and_drop(fake_openai: FakeOpenAI) -> None:
    fake_openai.hang = True
    t = time.perf_counter()
    with client(fake_openai, timeout=httpx.Timeout(0.3)) as c, pytest.raises(httpx.ReadTimeout):
        oa_chat(c)
    assert time.perf_counter() - t < 2.0
    with client(fake_openai) as c:
        assert c.get("/v1/models").status_code == 200  # only inference hangs
        fake_openai.hang = False
        fake_openai.drop_connection = True
        with pytest.raises(httpx.RemoteProtocolError):
            oa_chat(c)
        fake_openai.drop_connection = False
        assert oa_chat(c).status_code == 200
    t = time.perf_counter()
    fake_openai.close()  # returns promptly even after a hung request
    assert time.perf_counter() - t < 2.0


def test_delays(fake_openai: FakeOpenAI) -> None:
    fake_openai.set(first_byte_delay=0.05, chunk_delay=0.01, tokens_per_chunk=100)
    with client(fake_openai) as c:
        t = time.perf_counter()
        oa_chat(c)
        non_stream = time.perf_counter() - t
        t = time.perf_counter()
        events = parse_sse(oa_chat(c, stream=True).text)
        streamed = time.perf_counter() - t
    assert non_stream >= 0.05
    n = len(events) - 1  # role chunk, one content chunk, finish chunk, then [DONE]
    assert streamed >= 0.05 + 0.01 * n - 0.005


GARBAGE: list[Any] = [
    b"not json",
    {},
    [],
    5,
    {"model": 1, "messages": "x"},
    {"messages": [1, 2], "input": 5, "prompt": None, "options": [1], "keep_alive": True},
    {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, "bad"]}],
        "tools": "x",
        "stop": 5,
    },
    {"messages": [{"role": "user", "content": "x"}], "stream": True, "id_slot": 99, "stream_options": 5},
    {"content": 5, "tokens": ["a", 1], "model_name": 5, "ctx_size": "x", "instance_id": None},
    {"model_name": "Llama-3.2-1B-Instruct-GGUF", "llamacpp_args": "'unbalanced", "context_length": True},
]


def test_garbage_never_crashes_a_fake(fake_ollama: FakeOllama, fake_openai_factory: Callable[..., FakeOpenAI]) -> None:
    fakes: list[Any] = [fake_ollama, *(fake_openai_factory(f) for f in FLAVOURS)]
    for fake in fakes:
        model = "llama3.2:1b" if isinstance(fake, FakeOllama) else fake.models[0].name
        with client(fake) as c:
            for method, path in list(fake._routes):
                if method in ("GET", "HEAD"):
                    assert c.request(method, path).status_code < 500
                    continue
                for body in GARBAGE:
                    if isinstance(body, bytes):
                        c.post(path, content=body)
                    elif isinstance(body, dict) and body:
                        c.post(path, json={"model": model, **body})
                    else:
                        c.post(path, json=body)
        assert fake.handler_errors == [], fake.handler_errors[:1]


def test_fakes_do_not_import_autotune() -> None:
    for src in (Path(__file__).parent / "fakes").glob("*.py"):
        text = src.read_text()
        assert "import autotune" not in text and "from autotune" not in text, src


def test_knob_names_are_checked(fake_ollama: FakeOllama) -> None:
    with pytest.raises(TypeError):
        fake_ollama.set(no_such_knob=1)


# ----------------------------------------------------------------------------------------------------
# real client libraries accept the fakes


def test_ollama_python_client_talks_to_fake(fake_ollama: FakeOllama) -> None:
    ollama = pytest.importorskip("ollama")
    c = ollama.Client(host=fake_ollama.url, timeout=5)
    resp = c.chat(model="llama3.2:1b", messages=HELLO, options={"num_ctx": 8192})
    assert resp.message.content == fake_ollama.response_text and resp.prompt_eval_count
    parts = list(c.chat(model="llama3.2:1b", messages=HELLO, stream=True, options={"num_ctx": 8192}))
    assert "".join(p.message.content for p in parts) == fake_ollama.response_text and parts[-1].done
    info = c.show("gemma3:270m")
    assert info.modelinfo["gemma3.attention.sliding_window"] == 512
    assert [m.model for m in c.ps().models] == ["llama3.2:1b"]
    assert fake_ollama.reloads == 0


def test_openai_python_client_talks_to_fake(fake_llama_server: FakeOpenAI) -> None:
    openai = pytest.importorskip("openai")
    c = openai.OpenAI(base_url=fake_llama_server.url + "/v1", api_key="x", timeout=5, max_retries=0)
    resp = c.chat.completions.create(model="m", messages=HELLO)  # type: ignore[arg-type]
    assert resp.choices[0].message.content == fake_llama_server.response_text
    stream = c.chat.completions.create(
        model="m",
        messages=HELLO,
        stream=True,
        stream_options={"include_usage": True},  # type: ignore[arg-type]
    )
    chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 0
    emb = c.embeddings.create(model="m", input=["hello world"])  # base64 on the wire
    assert len(emb.data[0].embedding) == 64
    with run_fake_openai("lmstudio") as lms:
        c2 = openai.OpenAI(base_url=lms.url + "/v1", api_key="x", timeout=5, max_retries=0)
        assert c2.models.list().data[0].id == "llama-3.2-1b-instruct"
