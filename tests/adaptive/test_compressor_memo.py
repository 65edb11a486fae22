"""context-compressor's memo: per-message results remembered across requests give the same output as
computing them afresh, stay bounded, and never serve an edited message's old result."""

from __future__ import annotations

import json
import random
import re
from typing import Any

from adaptive_corpus import coding_conversation

from autotune_core import ChatRequest, Message
from autotune_core.pipeline import Pipeline
from autotune_core.testing import LLAMA_1B
from autotune_core.tokens import estimate_tokens
from autotune_plugins.context_compressor import ContextCompressorPlugin, Memo
from autotune_plugins.context_compressor.classifier import has_trace, tech_words
from autotune_plugins.context_compressor.compress import _describe_json, _match_bracket, fold_json
from autotune_plugins.context_compressor.facts import TOPICS, extract_facts
from autotune_plugins.context_compressor.window import Outcome, compress_history


def count(message: Message) -> int:
    return (
        4
        + estimate_tokens(message.content)
        + sum(estimate_tokens(c.name) + estimate_tokens(c.arguments) for c in message.tool_calls)
    )


def growing(turns: int) -> list[list[Message]]:
    """The requests of a conversation as a client sends them: request N ends with user message N."""
    full = coding_conversation(turns)[:-1]
    return [full[: i + 1] for i, m in enumerate(full) if m.role == "user"]


def run(messages: list[Message], memo: Memo | None = None) -> Outcome:
    budget = 8192 - count(messages[0]) - count(messages[-1]) - 1024 - 64
    if memo is None:
        return compress_history(messages, budget=budget, count=count)
    return compress_history(messages, budget=budget, count=count, memo=memo)


def same(a: Outcome, b: Outcome) -> bool:
    return (a.tier, a.messages, a.history_before, a.history_after, a.fits, a.attempts) == (
        b.tier,
        b.messages,
        b.history_before,
        b.history_after,
        b.fits,
        b.attempts,
    )


def test_cached_equals_uncached_on_every_turn_of_a_growing_conversation() -> None:
    memo = Memo()
    tiers = set()
    for messages in growing(30):
        cached, plain = run(messages, memo), run(messages)
        assert same(cached, plain), f"turn with {len(messages)} messages differs"
        tiers.add(plain.tier)
    assert {"FULL", "RECENT_PLUS_FACTS", "EMERGENCY"} <= tiers  # the walk crosses the tiers
    assert memo.hits > memo.misses  # earlier turns' results were reused


def test_a_new_turn_only_computes_its_new_messages() -> None:
    memo = Memo()
    requests = growing(20)
    run(requests[-2], memo)
    before = memo.misses
    run(requests[-1], memo)
    new = len(requests[-1]) - len(requests[-2])
    assert 0 < memo.misses - before <= new + 1  # the new messages (and the facts block's changed neighbour)


def test_the_memo_is_bounded_by_entries_and_by_characters() -> None:
    small = Memo(max_entries=8)
    for messages in growing(25):
        assert same(run(messages, small), run(messages))  # thrashing changes nothing but speed
        assert len(small) <= 8
    by_chars = Memo(max_entries=10_000, max_chars=5_000)
    run(growing(25)[-1], by_chars)
    assert 0 < by_chars.chars <= 5_000 and len(by_chars) < 20
    off = Memo(max_entries=0)
    assert same(run(growing(12)[-1], off), run(growing(12)[-1])) and len(off) == 0


def test_an_edited_earlier_message_is_not_served_stale() -> None:
    memo = Memo()
    messages = growing(16)[-1]
    first = run(messages, memo)
    index = next(i for i, m in enumerate(messages) if m.role == "assistant" and "step_3" in m.content)
    edited = list(messages)
    edited[index] = edited[index].model_copy(
        update={"content": edited[index].content.replace("def step_3(", "def renamed_step(")}
    )
    again = run(edited, memo)
    assert same(again, run(edited))
    text, before = "\n".join(m.content for m in again.messages), "\n".join(m.content for m in first.messages)
    assert "def renamed_step(" in text and "def renamed_step(" not in before and "def step_3(" not in text


def test_a_shared_copy_edited_in_place_is_rebuilt() -> None:
    memo = Memo()
    messages = growing(16)[-1]
    reference = run(messages)
    out = run(messages, memo)
    shrunk = next(
        m for m, o in zip(out.messages, messages, strict=False) if m.content != o.content and m.role == "assistant"
    )
    shrunk.content = "tampered"  # a hook that edits a message in place instead of replacing it
    assert same(run(messages, memo), reference)


def test_topics_per_message_match_a_search_of_the_joined_text() -> None:
    # " go " may use the space that joins two messages; the per-message search must find exactly those
    cases = [
        ["we use go", "daily"],
        ["go fast", "x"],
        ["a", "go"],
        ["go"],
        ["", "go", ""],
        ["ago", "good"],
        ["let's go", "go now"],
        ["GO", "Pytest runs"],
        ["x go", ""],
        [],
    ]
    for contents in cases:
        messages = [Message(role="user", content=c) for c in contents]
        joined = " ".join(c.lower() for c in contents)
        expected = [name for name, words in TOPICS.items() if any(w in joined for w in words)][:8]
        assert extract_facts(messages, Memo()).topics == expected == extract_facts(messages).topics, contents


async def test_the_plugin_remembers_across_requests_and_can_be_turned_off(autotune_host_factory: Any) -> None:
    plugin = ContextCompressorPlugin()
    host = autotune_host_factory(plugin)
    off_plugin = ContextCompressorPlugin()
    off = autotune_host_factory(off_plugin, settings={"context-compressor": {"remembered_messages": 0}})
    for messages in growing(14)[-3:]:
        request = ChatRequest(model="llama3.2:1b", messages=messages)
        on_plan = (await Pipeline(host).plan(request, host.backend("fake"), LLAMA_1B)).plan
        off_plan = (await Pipeline(off).plan(request, off.backend("fake"), LLAMA_1B)).plan
        assert on_plan.messages == off_plan.messages and on_plan.flags == off_plan.flags
    assert len(plugin.memo) > 0 and plugin.memo.hits > 0
    assert len(off_plugin.memo) == 0


# -- the faster per-message steps give the regex-only answers -------------------------------------------

_TRACE_REGEX = re.compile(
    r"Traceback \(most recent call last\)|^\s+at [\w.$<>]+\(|\b\w+(Error|Exception)\b|"
    r"\bpanicked at\b|\bSegmentation fault\b|^\s*File \"[^\"]+\", line \d+",
    re.MULTILINE,
)
_TECH_REGEX = re.compile(
    r"\b(error|function|class|method|select|insert|update|delete|join|token|tokens|model|ram|gpu|cpu|"
    r"api|json|yaml|docker|kubernetes|config|database|query|index|cache|thread|async|import|module|"
    r"deploy|server|request|response|endpoint|schema|variable|compile|build|test|bug|memory)\b",
    re.IGNORECASE,
)


def _fold_json_char_by_char(text: str, min_chars: int = 120) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] in "{[":
            end = _match_bracket(text, i)
            if end > 0 and end - i - 2 >= min_chars:
                try:
                    value = json.loads(text[i:end])
                except ValueError:
                    value = None
                if isinstance(value, dict | list):
                    out.append(_describe_json(value))
                    i = end
                    continue
        out.append(text[i])
        i += 1
    return "".join(out)


def _samples() -> list[str]:
    rng = random.Random(17)
    pieces = [
        "Error",
        "ValueError",
        "Exception",
        "panicked at",
        "Segmentation fault",
        "Traceback (most recent",
        " call last)",
        'File "a.py", line 3',
        "\n    at com.x.Y(",
        "  at ",
        "TOKENS",
        "Token",
        "tokens_",
        "claſs",
        "\u212aubernetes",
        "İmport",
        "gpu",
        "GPU!",
        "_api",
        "api2",
        "{",
        "}",
        "[",
        "]",
        '"',
        '{"a": [1, 2, {"b": "}"}]}',
        " ",
        "\n",
        "é",
        "x" * 40,
        json.dumps({f"k{i}": i for i in range(30)}),
    ]
    texts = [m.content for m in coding_conversation(20)]
    for _ in range(400):
        texts.append("".join(rng.choice(pieces) for _ in range(rng.randint(0, 30))))
    return texts


def test_trace_and_tech_word_shortcuts_match_the_regexes() -> None:
    for text in _samples():
        assert has_trace(text) == bool(_TRACE_REGEX.search(text)), text
        assert tech_words(text) == len(_TECH_REGEX.findall(text)), text


def test_fold_json_jumping_between_brackets_matches_the_char_loop() -> None:
    for text in _samples():
        for min_chars in (0, 5, 120):
            assert fold_json(text, min_chars) == _fold_json_char_by_char(text, min_chars), text
