"""autotune chat without a terminal: transcripts, notes, Markdown blocks, both engines against the fake Ollama,
the default model, ``autotune run``'s fit warning and ``autotune unload``."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from click.testing import CliRunner

from autotune_core.chat.engine import LocalEngine, RemoteEngine, pick_default
from autotune_core.chat.history import ChatStore, Conversation, Turn
from autotune_core.chat.notes import final_value, header_notes, parse_compact, plan_notes
from autotune_core.chat.render import split_done
from autotune_core.cli import _build
from autotune_core.cli import common as cli_common
from autotune_core.errors import UpstreamError
from autotune_core.host import PluginHost
from autotune_core.messages import ChatRequest, Message
from autotune_core.pipeline import Pipeline
from autotune_core.plan import Plan
from autotune_core.server import create_app
from autotune_core.testing import make_hardware


def _env(fake: Any, **extra: str) -> dict[str, str]:
    import os

    return {**os.environ, "AUTOTUNE_OLLAMA_URL": fake.url, "AUTOTUNE_BACKEND": "ollama", **extra}


# -- transcripts ---------------------------------------------------------------------------------------------


def test_store_round_trip_keeps_interrupted_answers(tmp_path: Any) -> None:
    store = ChatStore(tmp_path)
    conv = Conversation(model="m", system="be brief")
    conv.turns += [Turn("user", "hi"), Turn("assistant", "hel", interrupted=True), Turn("user", "again")]
    store.save(conv)
    loaded = store.load(conv.id)
    assert loaded is not None and loaded.turns[1].interrupted and loaded.system == "be brief"
    assert [m.role for m in loaded.messages()] == ["system", "user", "assistant", "user"]
    assert "(interrupted)" in loaded.markdown()
    assert [c.id for c in store.list()] == [conv.id]
    assert not list(tmp_path.glob("*.tmp"))  # written atomically


def test_store_refuses_path_tricks(tmp_path: Any) -> None:
    store = ChatStore(tmp_path)
    with pytest.raises(ValueError):
        store.path("../etc/passwd")
    assert store.load("nope") is None


# -- notes and rendering -----------------------------------------------------------------------------------


def test_compact_trace_parsing() -> None:
    trace = parse_compact(
        "num_ctx=ctx-sizing>1536,ctx-buckets>2048;kv_type=kv-precision>f16,core>None;keep_alive=client~300"
    )
    assert final_value(trace, "num_ctx") == "2048"
    assert final_value(trace, "kv_type") is None  # the backend could not honour it
    assert final_value(trace, "keep_alive") is None  # a kept client value is not a step
    notes = header_notes(
        {
            "x-autotune-warning": "num_ctx lowered from 8192 to 4096 by noswap-guard",
            "x-autotune-plan": "num_ctx=noswap-guard>4096;messages=context-compressor>5",
        }
    )
    assert any("lowered" in n for n in notes) and any("context-compressor" in n for n in notes)


def test_plan_notes_report_guards_and_flags() -> None:
    plan = Plan(model="m")
    plan.record("ctx-sizing", "num_ctx", None, 2048, "sized")  # routine: no note
    plan.record("live-pressure", "num_ctx", 2048, 1024, "high pressure")
    plan.flags["truncated"] = {"expected": 900, "reported": 500}
    plan.warnings.append("num_ctx lowered from 8192 (client) to 4096 by noswap-guard")
    notes = plan_notes(plan, reloaded=True, load_ms=420)
    assert notes[0].startswith("warning: num_ctx lowered")
    assert any("live-pressure" in n and "2048 → 1024" in n for n in notes)
    assert any("backend saw 500 of ~900" in n for n in notes)
    assert any("reloaded (420 ms)" in n for n in notes)
    assert not any("ctx-sizing" in n for n in notes)


def test_markdown_blocks_split_outside_fences_only() -> None:
    done, rest = split_done("Intro.\n\n```py\nx = 1\n\ny = 2\n```\n\nTail")
    assert done == "Intro.\n\n```py\nx = 1\n\ny = 2\n```\n\n" and rest == "Tail"
    assert split_done("```py\nx\n\n")[0] == ""  # inside an open fence nothing is finished


# -- engines against the fake Ollama -------------------------------------------------------------------


def test_local_engine_streams_and_reports(fake_ollama: Any) -> None:
    host = PluginHost(env=_env(fake_ollama), hardware=make_hardware(16, 12))

    async def go() -> tuple[str, Any]:
        engine = LocalEngine(host)
        await engine.start()
        try:
            request = ChatRequest(
                model="llama3.2:1b",
                stream=True,
                conversation_id="c1",
                messages=[Message(role="user", content="Say hi")],
            )
            text = "".join([piece async for piece in engine.stream(request)])
            return text, engine
        finally:
            await engine.close()

    text, engine = asyncio.run(go())
    stats = engine.last
    assert text and stats is not None and not stats.interrupted
    sent = fake_ollama.last_request("/api/chat").json
    assert stats.num_ctx == sent["options"]["num_ctx"]  # the context autotune chose and sent
    assert stats.prompt_tokens > 0 and stats.completion_tokens > 0 and stats.ttft_ms is not None
    assert "ctx " in stats.line() and "ollama/llama3.2:1b" in stats.line()
    assert any("ctx-sizing" in line for line in engine.plan_lines())
    assert "sampling" not in json.dumps(sent.get("options", {}))


def test_local_engine_cancel_marks_interrupted(fake_ollama: Any) -> None:
    fake_ollama.chunk_delay = 0.05
    fake_ollama.response_text = "word " * 200
    host = PluginHost(env=_env(fake_ollama), hardware=make_hardware(16, 12))

    async def go() -> Any:
        engine = LocalEngine(host)
        await engine.start()
        got: list[str] = []

        async def consume() -> None:
            async for piece in engine.stream(
                ChatRequest(model="llama3.2:1b", stream=True, messages=[Message(role="user", content="talk")])
            ):
                got.append(piece)

        task = asyncio.ensure_future(consume())
        while not got:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await engine.close()
        return engine, got

    engine, got = asyncio.run(go())
    assert engine.last.interrupted and 0 < len(got) < 200
    deadline = time.monotonic() + 5
    while fake_ollama.client_disconnects == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake_ollama.client_disconnects == 1  # the upstream request was cancelled, not left running


def test_default_model_prefers_a_loaded_one_then_the_largest_that_fits(fake_ollama: Any) -> None:
    host = PluginHost(env=_env(fake_ollama), hardware=make_hardware(16, 12))
    assert asyncio.run(pick_default(Pipeline(host))) == "llama3.2:1b"  # largest chat model; embeddings never
    small = PluginHost(env=_env(fake_ollama), hardware=make_hardware(2, 1.2))
    assert asyncio.run(pick_default(Pipeline(small))) == "gemma3:270m"  # the 1.3 GB model does not fit
    fake_ollama.set()  # no-op; now load gemma3 so it is resident
    import httpx

    httpx.post(f"{fake_ollama.url}/api/generate", json={"model": "gemma3:270m"}, timeout=5)
    host = PluginHost(env=_env(fake_ollama), hardware=make_hardware(16, 12))
    assert asyncio.run(pick_default(Pipeline(host))) == "gemma3:270m"


@pytest.fixture
def autotune_server(fake_ollama: Any) -> Iterator[str]:
    """A live server on every entry point before a fake Ollama: the chat engine talks HTTP to it, as a user's."""
    host = PluginHost(env=_env(fake_ollama), hardware=make_hardware(16, 12))
    app = create_app(host, sampler=False)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_remote_engine_reads_the_plan_headers(autotune_server: str, fake_ollama: Any) -> None:
    async def go() -> Any:
        engine = RemoteEngine(autotune_server)
        await engine.start()
        try:
            assert await engine.default_model() == "llama3.2:1b"
            request = ChatRequest(
                model="llama3.2:1b",
                conversation_id="remote-1",
                profile="fast",
                messages=[Message(role="user", content="Say hi")],
            )
            text = "".join([p async for p in engine.stream(request)])
            with pytest.raises(UpstreamError, match="404"):
                async for _ in engine.stream(ChatRequest(model="no-such-model", messages=request.messages)):
                    pass
            return text, engine
        finally:
            await engine.close()

    text, engine = asyncio.run(go())
    first = engine.history[0]
    sent = fake_ollama.requests_to("/api/chat")[-1]
    assert text and first.num_ctx == sent.json["options"]["num_ctx"]
    assert first.completion_tokens > 0 and first.backend == "ollama"
    assert sent.headers.get("x-conversation-id") is None  # autotune's own header never reaches the upstream
    assert any("x-autotune-plan" in line for line in engine.plan_lines())


# -- autotune run / unload ------------------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, fake_ollama: Any) -> Iterator[Any]:
    monkeypatch.setenv("AUTOTUNE_OLLAMA_URL", fake_ollama.url)
    monkeypatch.setenv("AUTOTUNE_BACKEND", "ollama")
    cli_common.reset_host()
    yield _build()
    cli_common.reset_host()


def test_run_warns_when_the_model_is_tight(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    tiny = PluginHost(hardware=make_hardware(2, 1.6))
    monkeypatch.setattr(cli_common, "_host", tiny)
    result = CliRunner().invoke(cli, ["run", "llama3.2:1b"], input="n\n")
    assert result.exit_code == 1, result.output
    assert "warning: llama3.2:1b is" in result.output and "safe max context" in result.output


def test_run_starts_the_chat_when_it_fits(cli: Any, fake_ollama: Any) -> None:
    result = CliRunner().invoke(cli, ["run", "llama3.2:1b", "--max-tokens", "8"], input="Say hi\n/quit\n")
    assert result.exit_code == 0, result.output
    assert "fit: SAFE" in result.output and "TTFT" in result.output and "--resume" in result.output
    assert fake_ollama.requests_to("/api/chat")[-1].json["messages"][-1]["content"] == "Say hi"


def test_unload_frees_loaded_models(cli: Any, fake_ollama: Any) -> None:
    import httpx

    httpx.post(f"{fake_ollama.url}/api/generate", json={"model": "gemma3:270m"}, timeout=5)
    assert fake_ollama.loaded_context("gemma3:270m") is not None
    result = CliRunner().invoke(cli, ["unload", "gemma3:270m"])
    assert result.exit_code == 0 and "unloaded gemma3:270m from ollama" in result.output
    assert fake_ollama.loaded_context("gemma3:270m") is None and fake_ollama.unloads == 1
    assert "nothing unloaded" in CliRunner().invoke(cli, ["unload"]).output


def test_run_with_a_prompt_answers_once_on_stdout(cli: Any, fake_ollama: Any) -> None:
    fake_ollama.response_text = "Hello there."
    result = CliRunner().invoke(cli, ["run", "llama3.2:1b", "Say hi", "--plain"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "Hello there."  # only the answer: pipeable, as `ollama run MODEL PROMPT`
    assert "TTFT" in result.stderr and "fit: SAFE" in result.stderr
