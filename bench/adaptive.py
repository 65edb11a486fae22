"""Context and memory: the compressor's tokens saved per tier on the 40-turn coding conversation, and
recall precision on a small planted set. Deterministic (no model needed); run ``python bench/adaptive.py``.

Uses the same material as tests/adaptive so the numbers are the tested behaviour.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "adaptive"))

from adaptive_corpus import PLANTED, QUERIES, code_block, coding_conversation, topic_embed

from autotune_core import Message
from autotune_core.testing import FakeBackend
from autotune_core.tokens import estimate_tokens
from autotune_plugins.context_compressor.window import compress_history, split
from autotune_plugins.recall.store import MemoryStore


def count(message: Message) -> int:
    return (
        4
        + estimate_tokens(message.content)
        + sum(estimate_tokens(c.name) + estimate_tokens(c.arguments) for c in message.tool_calls)
    )


def compressor() -> None:
    print("## Compressor: balanced profile (8192 context, 1024 output reserve), estimated tokens")
    print(
        f"{'turns':>5} {'history':>8} {'budget':>7} {'fill':>6}  {'tier':<18} {'after':>6} {'saved':>6} "
        f"{'saved%':>6} {'code kept':>9} {'ms':>6}"
    )
    for turns in (4, 6, 8, 9, 12, 20, 40):
        messages = coding_conversation(turns)
        budget = 8192 - count(messages[0]) - count(messages[-1]) - 1024 - 64
        _, history, _ = split(messages)
        before = sum(count(m) for m in history)
        started = time.perf_counter()
        outcome = compress_history(messages, budget=budget, count=count)
        took = (time.perf_counter() - started) * 1000
        text = "\n".join(m.content for m in outcome.messages)
        blocks = [t for t in range(1, turns + 1) if t % 7]
        kept = sum(code_block(t) in text for t in blocks)
        assert outcome.messages[-1] == messages[-1]
        print(
            f"{turns:>5} {before:>8} {budget:>7} {before / budget:>6.2f}  {outcome.tier:<18} "
            f"{outcome.history_after:>6} {outcome.saved:>6} {100 * outcome.saved / before:>5.0f}% "
            f"{kept:>4}/{len(blocks):<4} {took:>6.1f}"
        )


async def recall(embed: str) -> None:
    backend = FakeBackend()
    embedder = topic_embed if embed == "topic" else backend.embed
    with tempfile.TemporaryDirectory() as folder:
        store = MemoryStore(Path(folder) / "memory.db")
        for conv, user, reply in PLANTED:
            chunk = f"User: {user}\nAssistant: {reply}"
            vector = (await embedder("m", [chunk])).vectors[0] if embed != "none" else None  # type: ignore[attr-defined]
            store.add_turn(conv, user, reply, embedding=vector, embedding_model="m" if vector else None)
        tp = fp = fn = tn = 0
        for query, expected in QUERIES:
            vector = (await embedder("m", [query])).vectors[0] if embed != "none" else None  # type: ignore[attr-defined]
            hits = store.search(
                query, vector=vector, embedding_model="m" if vector else None, k=3, min_score=0.38, exclude_conv="new"
            )
            got = {h.conv_id for h in hits}
            if expected is None:
                fp += len(got)
                tn += not got
            else:
                tp += expected in got
                fn += expected not in got
                fp += len(got - {expected})
        store.close()
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall_rate = tp / (tp + fn) if tp + fn else 1.0
    print(f"{embed:<22} {tp:>3} {fp:>3} {fn:>3} {tn:>9} {precision:>9.2f} {recall_rate:>6.2f}")


def main() -> None:
    compressor()
    print()
    print(
        f"## Recall: {len(PLANTED)} planted facts, {sum(q[1] is not None for q in QUERIES)} related and "
        f"{sum(q[1] is None for q in QUERIES)} unrelated new conversations, threshold 0.38, top 3"
    )
    print(f"{'embeddings':<22} {'TP':>3} {'FP':>3} {'FN':>3} {'unrelated':>9} {'precision':>9} {'recall':>6}")
    for embed in ("topic", "core-fake-32-bucket", "none"):
        asyncio.run(recall(embed))


if __name__ == "__main__":
    main()
