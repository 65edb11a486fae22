"""recall: saving every turn, threshold-gated injection, durability under kill -9, forget, CLI, routes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from adaptive_corpus import PLANTED, QUERIES, topic_embed
from click.testing import CliRunner

from autotune_core import ChatRequest, Message, PluginHost
from autotune_core.config import data_dir
from autotune_core.pipeline import Pipeline
from autotune_core.pytest_plugin import make_host
from autotune_core.testing import LLAMA_1B, FakeBackend
from autotune_plugins.recall import RecallPlugin, format_block
from autotune_plugins.recall.store import Hit, MemoryStore, lexical_score, terms


def _host(
    *plugins: object,
    settings: dict[str, object] | None = None,
    env: dict[str, str] | None = None,
    entrypoints: bool = False,
    stock_embed: bool = False,
) -> PluginHost:
    """The shipped host (make_host) plus what every recall test needs: recall's settings and a topic embedder."""
    host = make_host(*plugins, settings={"recall": settings or {}}, load_entrypoints=entrypoints, env=env or {})
    if not stock_embed:
        host.backend("fake").embed = topic_embed  # type: ignore[method-assign]
    return host


async def _turn(host: PluginHost, text: str, reply: str, conv: str | None, system: str = "You are helpful.") -> str:
    """One request through the real pipeline; returns the plan's message list as text."""
    backend = host.backend("fake")
    assert isinstance(backend, FakeBackend)
    backend.reply = reply
    request = ChatRequest(
        model="llama3.2:1b",
        conversation_id=conv,
        messages=[Message(role="system", content=system), Message(role="user", content=text)],
    )
    pipeline = Pipeline(host)
    prepared = await pipeline.plan(request, backend, LLAMA_1B)
    await pipeline.run(prepared)
    return prepared.plan.model_dump_json()


async def _plant(host: PluginHost) -> None:
    for conv, user, reply in PLANTED:
        await _turn(host, user, reply, conv)


async def test_planted_fact_is_recalled_in_a_related_new_conversation_only() -> None:
    plugin = RecallPlugin()
    host = _host(plugin)
    await host.start()
    await _plant(host)
    assert plugin.store().stats()["memories"] == 3
    for query, expected in QUERIES:
        backend = host.backend("fake")
        request = ChatRequest(
            model="llama3.2:1b",
            conversation_id=f"new-{abs(hash(query))}",
            messages=[Message(role="system", content="You are helpful."), Message(role="user", content=query)],
        )
        plan = (await Pipeline(host).plan(request, backend, LLAMA_1B)).plan
        injected = [m for m in plan.messages if m.content.startswith("[Memories from earlier")]
        if expected is None:
            assert not injected, query
            assert any(e.plugin == "recall" and e.knob == "recall" for e in plan.trace)
            continue
        assert len(injected) == 1, query
        assert plan.messages[0].content == "You are helpful." and plan.messages[1] is injected[0]
        planted = next(user for conv, user, _ in PLANTED if conv == expected)
        assert planted in injected[0].content
        others = [user for conv, user, _ in PLANTED if conv != expected]
        assert not any(text in injected[0].content for text in others)  # only what scores ≥ 0.38
    await host.stop()


async def test_never_recalls_from_the_same_conversation_and_block_is_stable() -> None:
    plugin = RecallPlugin()
    host = _host(plugin)
    await _plant(host)
    query = QUERIES[0][0]
    same = await _turn(host, query, "It listens on 5433.", "conv-pg")
    assert "[Memories from earlier" not in same
    first = await _turn(host, query, "It listens on port 5433 as noted.", "conv-new")
    assert "Bluebird stores invoices" in first
    # a later turn of the same conversation gets the same block, byte for byte
    backend = host.backend("fake")
    request = ChatRequest(
        model="llama3.2:1b",
        conversation_id="conv-new",
        messages=[
            Message(role="system", content="You are helpful."),
            Message(role="user", content=query),
            Message(role="assistant", content="It listens on port 5433."),
            Message(role="user", content="And which service owns it?"),
        ],
    )
    plan = (await Pipeline(host).plan(request, backend, LLAMA_1B)).plan
    block = plan.messages[1].content
    assert block.startswith("[Memories from earlier") and block in first.replace("\\n", "\n")


async def test_every_turn_is_saved_but_stateless_requests_are_not() -> None:
    plugin = RecallPlugin()
    host = _host(plugin, stock_embed=True)
    for i in range(4):
        await _turn(
            host,
            f"turn number {i} about the Osprey scheduler and its cron table?",
            f"Answer {i}: the Osprey scheduler reads its cron table at start-up and on SIGHUP.",
            "conv-1",
        )
    await _turn(
        host,
        "a stateless question about the Osprey scheduler cron table?",
        "A stateless answer that is long enough to be a memory chunk.",
        None,
    )
    store = plugin.store()
    conversation = store.conversation("conv-1")
    assert conversation is not None and len(conversation["messages"]) == 8
    assert store.stats()["memories"] == 4 and store.stats()["conversations"] == 1
    assert store.stats()["with_embeddings"] == 4  # the fake backend embeds
    assert Path(store.path) == data_dir() / "memory.db"


async def test_full_text_fallback_is_scored_not_injected_blindly() -> None:
    plugin = RecallPlugin()
    host = _host(plugin)
    backend = host.backend("fake")
    assert isinstance(backend, FakeBackend)

    async def broken(model: str, inputs: list[str]) -> object:
        raise ConnectionError("no embedding model")

    backend.embed = broken  # type: ignore[method-assign]
    await _plant(host)
    assert plugin.store().stats()["with_embeddings"] == 0
    related = await _turn(host, QUERIES[1][0], "24 GB.", "c-new-1")
    assert "RTX 4090" in related and "via text" in related
    # shares exactly one content word ("invoices") with a planted memory: below the threshold
    weak = await _turn(host, "Draft polite reminder emails for overdue invoices to customers", "ok", "c-new-2")
    assert "[Memories from earlier" not in weak


def test_lexical_score_and_block_limits() -> None:
    q = terms("Which port does the Bluebird database listen on?")
    assert lexical_score(q, PLANTED[0][1] + " " + PLANTED[0][2]) >= 0.38
    assert lexical_score(q, "Sourdough needs a long cold fermentation.") == 0.0
    hits = [Hit(i, "c", "word " * 300, time.time() - 7200, "m", 0.9, "vector") for i in range(5)]
    block = format_block(hits, 1200)
    body = block.split("\n")[1:-1]
    assert sum(len(line.split(") ", 1)[1]) for line in body) <= 1200 and len(body) <= 3
    assert "2 hours ago" in block


def test_pruning_keeps_the_store_bounded(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path / "m.db", max_rows=10, max_messages=30)
    ids = [
        store.add_turn("c", f"user says something long enough {i} " * 3, f"assistant replies {i} " * 5).memory_id
        for i in range(25)
    ]
    stats = store.stats()
    assert stats["memories"] == 10 and stats["messages"] == 30
    assert [m["id"] for m in store.memories(limit=100)] == sorted(ids[-10:], reverse=True)
    assert store.integrity() == "ok"


WRITER = """
import sys
from autotune_plugins.recall.store import MemoryStore
store = MemoryStore(sys.argv[1])
i = 0
while True:
    saved = store.add_turn("conv-kill", f"user turn {i} " + "u" * 300, f"assistant turn {i} " + "a" * 600,
                           embedding=[float(i % 7), 1.0, 2.0], embedding_model="fake/emb")
    print(saved.memory_id, saved.user_msg_id, saved.assistant_msg_id, flush=True)
    i += 1
"""


def test_no_acknowledged_turn_lost_on_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    acked: list[list[int]] = []
    deadline = time.monotonic() + 15
    assert proc.stdout is not None
    try:
        while len(acked) < 40 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acked.append([int(x) for x in line.split()])
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        rest, _ = proc.communicate(timeout=10)
    acked += [[int(x) for x in line.split()] for line in rest.splitlines() if line.strip()]
    assert proc.returncode == -signal.SIGKILL
    assert len(acked) >= 40, "the writer did not acknowledge enough turns in time"
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.execute("INSERT INTO memories_fts(memories_fts) VALUES ('integrity-check')")
    memories = {row[0] for row in db.execute("SELECT id FROM memories")}
    messages = {row[0] for row in db.execute("SELECT id FROM messages")}
    for memory_id, user_id, assistant_id in acked:
        assert memory_id in memories and user_id in messages and assistant_id in messages
    db.close()


def test_cli_forget_all_really_deletes(tmp_path: Path) -> None:
    plugin = RecallPlugin()
    host = _host(plugin, settings={"path": str(tmp_path / "memory.db")})
    from autotune_core.cli import common

    common._host = host
    try:
        store = plugin.store(host)
        secret = "zebracorn-4471 launch code for the Peregrine project"
        for i in range(20):
            store.add_turn(f"c{i % 3}", f"{secret} turn {i}, please remember it", f"Remembered the {secret}.")
        group = plugin_group(plugin)
        runner = CliRunner()
        out = runner.invoke(group, ["search", "zebracorn Peregrine launch"])
        assert out.exit_code == 0 and "zebracorn" in out.output
        assert "memories: 20" in runner.invoke(group, ["stats"]).output
        first = store.memories(limit=1)[0]["id"]
        assert runner.invoke(group, ["forget", str(first)]).exit_code == 0
        assert runner.invoke(group, ["forget", "--conversation", "c1", "--yes"]).exit_code == 0
        assert store.memories(conv_id="c1") == []
        assert runner.invoke(group, ["forget"]).exit_code != 0  # exactly one target required
        out = runner.invoke(group, ["forget", "--all", "--yes"])
        assert out.exit_code == 0, out.output
        assert store.stats()["memories"] == 0 and store.integrity() == "ok"
        blobs = b"".join(p.read_bytes() for p in tmp_path.glob("memory.db*"))
        assert b"zebracorn" not in blobs and b"Peregrine" not in blobs
    finally:
        common.reset_host()


def plugin_group(plugin: RecallPlugin):  # type: ignore[no-untyped-def]
    from autotune_plugins.recall.cli import memory_group

    return memory_group(plugin)


def test_conversation_routes() -> None:
    from starlette.applications import Starlette
    from starlette.routing import Route
    from starlette.testclient import TestClient

    plugin = RecallPlugin()
    host = _host(plugin)
    routes: list[Route] = []
    host.call(
        "register_routes",
        register=lambda path, endpoint, methods: routes.append(Route(path, endpoint, methods=methods)),
    )
    assert {r.path for r in routes} == {
        "/api/conversations",
        "/api/conversations/{conv_id}",
        "/api/conversations/{conv_id}/export",
    }
    plugin._host = host
    client = TestClient(Starlette(routes=routes))
    created = client.post(
        "/api/conversations", json={"model_id": "llama3.2:1b", "title": "Plans", "system_prompt": "Be brief."}
    )
    assert created.status_code == 201
    conv = created.json()["conversation_id"]
    assert len(conv) == 32
    plugin.store().add_turn(conv, "What is the plan for Friday?", "Ship the release and write notes.")
    assert [c["id"] for c in client.get("/api/conversations").json()["conversations"]] == [conv]
    got = client.get(f"/api/conversations/{conv}").json()
    assert [m["role"] for m in got["messages"]] == ["user", "assistant"] and got["title"] == "Plans"
    export = client.get(f"/api/conversations/{conv}/export").json()
    assert export["markdown"].startswith("# Plans") and "## Assistant\n\nShip the release" in export["markdown"]
    assert client.get(f"/api/conversations/{conv}/export?format=md").headers["content-type"].startswith("text/markdown")
    assert client.post("/api/conversations", content=b"[1]").status_code == 400
    assert client.delete(f"/api/conversations/{conv}").json() == {"deleted": conv}
    assert client.get(f"/api/conversations/{conv}").status_code == 404
    assert client.delete(f"/api/conversations/{conv}").status_code == 404


@pytest.mark.parametrize("how", ["env", "settings"])
async def test_toggle(how: str) -> None:
    if how == "env":
        host = _host(env={"AUTOTUNE_DISABLE_PLUGINS": "recall"}, entrypoints=True)
        assert not host.enabled("recall") and host.plugin("recall") is None
    else:
        plugin = RecallPlugin()
        host = _host(plugin, settings={"inject": False, "save": False})
    out = await _turn(host, PLANTED[0][1], PLANTED[0][2], "conv-x")
    assert "[Memories" not in out
    assert not (data_dir() / "memory.db").exists()  # nothing saved, not even a file created
    on = _host(env={"AUTOTUNE_LOAD_PLUGINS": "recall"}, entrypoints=True)
    assert on.enabled("recall")


def test_settings_validated() -> None:
    from autotune_core.errors import ConfigError

    with pytest.raises(ConfigError, match="recall"):
        _host(RecallPlugin(), settings={"min_score": 3})


async def test_an_empty_store_costs_no_embedding_call() -> None:
    """Until something is saved there is nothing to recall: no embed round trip before the answer."""
    plugin = RecallPlugin()
    host = _host(plugin, settings={"path": ":memory:"})
    calls: list[str] = []

    async def counting_embed(model: str, inputs: list[str]) -> object:
        calls.append(inputs[0])
        return await topic_embed(model, inputs)

    host.backend("fake").embed = counting_embed  # type: ignore[method-assign]
    trace = await _turn(host, "What port does the staging database listen on?", "It listens on 6543.", None)
    assert calls == [] and "no memories stored yet" in trace
    await _turn(host, "Remember that the staging database listens on port 6543.", "Noted: 6543.", "conv-a")
    assert len(calls) == 1  # the save embeds the new memory
    trace = await _turn(host, "Which port is the staging database on again?", "6543.", "conv-b")
    assert len(calls) == 3 and "no memories stored yet" not in trace  # query embedded and searched
