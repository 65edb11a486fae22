"""Deterministic test material for the adaptive plugins: a 40-turn coding conversation and a planted
recall set. Shared by tests/adaptive and bench/adaptive.py so the benchmark measures what is tested.
"""

from __future__ import annotations

import json

from autotune_core import Message
from autotune_core.messages import ToolCall

SYSTEM = "You are a careful senior Python engineer. Answer with working code."

_TOPICS = [
    "parse the config file",
    "retry failed HTTP calls",
    "cache the embeddings",
    "stream the upload",
    "validate the user schema",
    "paginate the search API",
    "profile the slow query",
    "batch the writes",
    "rotate the log files",
    "hash the passwords",
]

_PROSE = (
    "The important detail here is that the function must stay pure so that it can be tested in isolation. "
    "We keep the I/O at the edges and pass plain data into the core logic, which makes the behaviour easy "
    "to reason about. If the input is malformed we raise a typed error instead of returning None, because "
    "silent failures are hard to debug later on. This also means callers get a clear message. "
)


def code_block(turn: int) -> str:
    """A unique fenced block per turn, so a test can check that none was lost."""
    return (
        f"```python\ndef step_{turn}(data: dict) -> dict:\n"
        f'    """Turn {turn}: {_TOPICS[turn % len(_TOPICS)]}."""\n'
        f"    result = {{k: v for k, v in data.items() if v is not None}}\n"
        f"    result['turn'] = {turn}\n"
        f"    return result\n```"
    )


def traceback_text(turn: int) -> str:
    return (
        "Traceback (most recent call last):\n"
        f'  File "app/worker_{turn}.py", line {10 + turn}, in run\n'
        "    payload = json.loads(body)\n"
        '  File "/usr/lib/python3.11/json/__init__.py", line 346, in loads\n'
        "    return _default_decoder.decode(s)\n"
        f"json.decoder.JSONDecodeError: Expecting value: line 1 column {turn} (char {turn - 1})"
    )


def coding_conversation(turns: int = 40) -> list[Message]:
    """System prompt, then ``turns`` user turns; every 5th turn has a tool round with a long log."""
    messages = [Message(role="system", content=SYSTEM)]
    for turn in range(1, turns + 1):
        topic = _TOPICS[turn % len(_TOPICS)]
        if turn % 7 == 0:
            messages.append(Message(role="user", content="ok thanks"))
            messages.append(Message(role="assistant", content="You're welcome."))
            continue
        question = f"How do I {topic} in the worker? We decided to use PostgreSQL 16 for step {turn}."
        if turn % 4 == 0:
            question += "\nIt fails with:\n" + traceback_text(turn)
        messages.append(Message(role="user", content=question))
        if turn % 5 == 0:
            call = ToolCall(id=f"call_{turn}", name="run_tests", arguments=json.dumps({"path": f"tests/t{turn}"}))
            messages.append(Message(role="assistant", content="", tool_calls=[call]))
            log_lines = [f"tests/t{turn}/test_case_{i}.py::test_{i} PASSED [{i * 3}%]" for i in range(30)]
            blob = json.dumps({f"metric_{i}": i * 1.5 for i in range(20)})
            messages.append(
                Message(
                    role="tool",
                    tool_call_id=f"call_{turn}",
                    name="run_tests",
                    content="\n".join(log_lines) + "\nsummary: " + blob,
                )
            )
        answer = (
            f"For step {turn} we should {topic} with a small helper.\n\n"
            + _PROSE * 3
            + "\n\n"
            + code_block(turn)
            + "\n\n"
            + _PROSE * 2
            + f"\n\nI fixed the handler for step {turn}. "
            "Run the tests again after this change."
        )
        messages.append(Message(role="assistant", content=answer))
    messages.append(
        Message(
            role="user",
            content="Now put it all together: write the main() that runs every step "
            "in order and reports which ones failed?",
        )
    )
    return messages


#: (conversation, text) facts that a later conversation should recall
PLANTED = [
    (
        "conv-pg",
        "Our billing service Bluebird stores invoices in PostgreSQL 16 on port 5433.",
        "Noted: Bluebird keeps invoices in PostgreSQL 16, listening on port 5433.",
    ),
    (
        "conv-gpu",
        "The inference box Kestrel has an RTX 4090 with 24 GB of VRAM for llama runs.",
        "Good, Kestrel with the RTX 4090 and 24 GB VRAM can hold a 13B model at Q4.",
    ),
    (
        "conv-deploy",
        "We deploy the Marmot frontend with Caddy behind Cloudflare tunnels.",
        "Understood, Marmot ships via Caddy with Cloudflare tunnels in front.",
    ),
]

#: (new conversation's first user message, the planted conversation it should recall or None)
QUERIES = [
    ("Which port does the Bluebird invoices PostgreSQL database listen on?", "conv-pg"),
    ("How much VRAM does Kestrel have for llama inference runs?", "conv-gpu"),
    ("Remind me how Marmot frontend gets deployed with Caddy?", "conv-deploy"),
    ("What is a good recipe for sourdough bread with rye flour?", None),
    ("Explain the rules of cricket to a beginner briefly.", None),
    ("Write a haiku about autumn leaves falling.", None),
]


async def topic_embed(model: str, inputs: list[str]) -> object:
    """A deterministic stand-in for a real embedding model: content words hashed (crc32) into 512
    dimensions. The core FakeBackend's 32-bucket hash is too collision-prone to test a 0.38 threshold.
    """
    import math
    import re
    import zlib

    from autotune_core.backend import EmbeddingResult

    stop = {
        "the",
        "a",
        "an",
        "is",
        "are",
        "of",
        "to",
        "in",
        "on",
        "for",
        "with",
        "and",
        "or",
        "what",
        "which",
        "how",
        "does",
        "do",
        "me",
        "my",
        "our",
        "we",
        "it",
        "its",
        "user",
        "assistant",
        "has",
        "have",
        "can",
    }
    vectors = []
    for text in inputs:
        vector = [0.0] * 512
        for word in re.findall(r"[a-z0-9]+", text.lower()):
            if word not in stop:
                vector[zlib.crc32(word.rstrip("s").encode()) % 512] += 1.0
        norm = math.sqrt(sum(v * v for v in vector)) or 1.0
        vectors.append([v / norm for v in vector])
    return EmbeddingResult(vectors=vectors, model=model)
