"""Cost that grows with the conversation: per-request time of the context compressor and of recall, turn by
turn, as a curve (turns → ms). Deterministic material, no model; run ``python bench/conversation_cost.py``.

The conversation is tests/adaptive/adaptive_corpus.py's coding chat, grown to 200 turns, sent as a client
sends it: request N is the system prompt, turns 1..N-1 and the new user message N, parsed from JSON afresh
as the server parses every request (balanced profile, 8192 context, so from turn ~9 on the compressor
works at its EMERGENCY tier). Columns:

- compressor, uncached: the hook with remembering off (``remembered_messages = 0``): every request redoes
  the regex work for the whole history (the behaviour before the cache);
- compressor, cached: the same hook when it has seen turns 1..N-1 (the conversation is walked in order,
  as a client would); the result is checked equal to the uncached one at every measured turn;
- recall: its pre_request with a store holding memories and the conversation's id (the first turn
  searches; later turns reuse that turn's block, which the prefix cache needs byte-stable anyway);
- whole plan: ``Pipeline.plan`` with every installed plugin (the FakeBackend), cached.

Times are CPU time of the process (``time.process_time``: this is a shared 2-core machine, and CPU time
is what a request costs; time spent descheduled is not). Each cached walk is repeated ``--walks`` times
with fresh plugins; per marked turn the median over the walks and over the five turns ending there is
printed (single turns vary with what they add: a tool round, a tier change).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "adaptive"))

from adaptive_corpus import PLANTED, coding_conversation, topic_embed

from autotune_core import ChatRequest, Message, PluginHost
from autotune_core.config import Settings
from autotune_core.errors import ContextOverflow
from autotune_core.pipeline import Pipeline
from autotune_core.plan import Plan
from autotune_core.testing import LLAMA_1B, FakeBackendPlugin, make_hardware
from autotune_plugins.context_compressor import ContextCompressorPlugin
from autotune_plugins.recall import RecallPlugin

MARKS = (1, 5, 10, 20, 40, 80, 120, 160, 200)


def requests(turns: int) -> list[list[Message]]:
    """Request N (1-based) = everything before user message N, plus that message."""
    full = coding_conversation(turns)[:-1]  # the corpus's closing question is not part of the growth
    users = [i for i, m in enumerate(full) if m.role == "user"]
    return [full[: i + 1] for i in users]


def host_with(
    *plugins: object, data: str, entrypoints: bool = False, settings: dict[str, object] | None = None
) -> PluginHost:
    config = Settings(backend="fake", plugins={"settings": settings or {}})
    return PluginHost(
        config=config,
        plugins=[FakeBackendPlugin(), *plugins],
        load_entrypoints=entrypoints,
        hardware=make_hardware(),
        env={"AUTOTUNE_DATA_DIR": data, "AUTOTUNE_CONFIG": str(Path(data) / "none.toml")},
    )


def as_parsed(messages: list[Message]) -> list[Message]:
    """The messages as the server sees them: parsed from the request's JSON, new objects every request (a
    cache that only worked for the very same objects would look free here and cost in a server)."""
    wire = json.dumps([m.model_dump(mode="json", exclude_none=True) for m in messages])
    return [Message.model_validate(m) for m in json.loads(wire)]


async def compressor_ms(
    host: PluginHost, plugin: ContextCompressorPlugin, messages: list[Message]
) -> tuple[float, list[Message]]:
    request = ChatRequest(model=LLAMA_1B.name, messages=messages)
    prepared = await Pipeline(host).plan(
        ChatRequest(model=LLAMA_1B.name, messages=messages[:1]), host.backend("fake"), LLAMA_1B
    )
    plan = Plan(model=request.model, backend="fake", profile=prepared.plan.profile, messages=list(messages))
    started = time.process_time()
    plugin.pre_request(prepared.ctx, request, plan)
    return (time.process_time() - started) * 1000, plan.messages


async def walk(turns: int, data: str) -> dict[str, dict[int, float]]:
    """One conversation walked in order: per turn ms of the cached compressor, recall and the whole plan."""
    out: dict[str, dict[int, float]] = {"cached": {}, "recall": {}, "plan": {}}
    compressor = ContextCompressorPlugin()
    c_host = host_with(compressor, data=data)
    recall = RecallPlugin()
    r_host = host_with(recall, data=data, settings={"recall": {"path": str(Path(data) / "memory.db")}})
    r_host.backend("fake").embed = topic_embed  # type: ignore[method-assign]
    await r_host.start()
    store = recall.store(r_host)
    for conv, user, reply in PLANTED:
        vector = (await topic_embed("m", [f"User: {user}\nAssistant: {reply}"])).vectors[0]
        store.add_turn(conv, user, reply, embedding=vector, embedding_model="fake/nomic-embed-text")
    full = host_with(data=data, entrypoints=True)
    pipeline = Pipeline(full)
    for n, sent in enumerate(requests(turns), start=1):
        messages = as_parsed(sent)
        took, _ = await compressor_ms(c_host, compressor, messages)
        out["cached"][n] = took
        request = ChatRequest(model=LLAMA_1B.name, messages=messages, conversation_id="bench-conv")
        prepared = await Pipeline(r_host).plan(
            ChatRequest(model=LLAMA_1B.name, messages=messages[:1]), r_host.backend("fake"), LLAMA_1B
        )
        plan = Plan(model=request.model, backend="fake", profile=prepared.plan.profile, messages=list(messages))
        started = time.process_time()
        await recall.pre_request(prepared.ctx, request, plan)
        out["recall"][n] = (time.process_time() - started) * 1000
        started = time.process_time()
        with contextlib.suppress(ContextOverflow):  # past ~130 turns even EMERGENCY cannot fit: refused
            await pipeline.plan(ChatRequest(model=LLAMA_1B.name, messages=messages), full.backend("fake"), LLAMA_1B)
        out["plan"][n] = (time.process_time() - started) * 1000
    await r_host.stop()
    return out


async def uncached(turn: int, data: str, check: ContextCompressorPlugin) -> tuple[float, bool]:
    """ms of the compressor with remembering off at ``turn``, and whether the cached result is the same."""
    plugin = ContextCompressorPlugin()
    host = host_with(plugin, data=data, settings={"context-compressor": {"remembered_messages": 0}})
    messages = requests(turn)[-1]
    took, cold = await compressor_ms(host, plugin, messages)
    warm_host = host_with(check, data=data)
    _, warm = await compressor_ms(warm_host, check, messages)
    return took, cold == warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--walks", type=int, default=5, help="cached walks (fresh plugins each)")
    parser.add_argument("--cold-rounds", type=int, default=3, help="uncached measurements per marked turn")
    args = parser.parse_args()
    marks = [t for t in MARKS if t <= args.turns]
    walks: list[dict[str, dict[int, float]]] = []
    with tempfile.TemporaryDirectory() as data:
        for i in range(args.walks):
            walks.append(asyncio.run(walk(args.turns, str(Path(data) / f"walk{i}"))))
        checker = ContextCompressorPlugin()  # walked in order too, so its cache is as a live server's
        for n, messages in enumerate(requests(args.turns), start=1):
            asyncio.run(compressor_ms(host_with(checker, data=data), checker, messages))
            if n == max(marks):
                break
        cold: dict[int, list[float]] = {t: [] for t in marks}
        same = True
        for _ in range(args.cold_rounds):
            for t in marks:
                took, equal = asyncio.run(uncached(t, data, checker))
                cold[t].append(took)
                same = same and equal

    def med(column: str, t: int) -> float:
        return statistics.median(w[column][n] for w in walks for n in range(max(1, t - 4), t + 1))

    messages = {t: len(requests(t)[-1]) for t in marks}
    print(
        f"Per-request CPU ms by conversation length (cached, recall, plan: median of {args.walks} walks × "
        f"the 5 turns ending at each mark; uncached: median of {args.cold_rounds} at the mark)"
    )
    print(
        f"{'turns':>5} {'messages':>8} {'compressor uncached':>20} {'compressor cached':>18} {'recall':>7} "
        f"{'whole plan':>10}"
    )
    for t in marks:
        print(
            f"{t:>5} {messages[t]:>8} {statistics.median(cold[t]):>20.2f} {med('cached', t):>18.2f} "
            f"{med('recall', t):>7.3f} {med('plan', t):>10.2f}"
        )
    print(f"cached result identical to uncached at every measured turn: {'yes' if same else 'NO'}")
    targets = [(40, 2.0), (200, 5.0)]
    for t, limit in targets:
        if t in marks:
            value = med("cached", t) + med("recall", t)
            print(
                f"target compressor + recall at {t} turns ≤ {limit} ms: {value:.2f} ms {'✓' if value <= limit else '✗'}"
            )


if __name__ == "__main__":
    main()
