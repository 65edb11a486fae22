"""context-compressor: tiers, re-check and escalation, protected code and traces, tool pairs, toggle."""

from __future__ import annotations

import re
from typing import Any

import pytest
from adaptive_corpus import SYSTEM, code_block, coding_conversation, traceback_text

from autotune_core import ChatRequest, Message
from autotune_core.config import Settings as CoreSettings
from autotune_core.messages import ToolCall
from autotune_core.pipeline import Pipeline
from autotune_core.testing import LLAMA_1B
from autotune_core.tokens import estimate_tokens
from autotune_plugins.context_compressor import ContextCompressorPlugin
from autotune_plugins.context_compressor.compress import compress_message, cut_prose, fold_json, strip_noise
from autotune_plugins.context_compressor.window import compress_history, split


def count(message: Message) -> int:
    return (
        4
        + estimate_tokens(message.content)
        + sum(estimate_tokens(c.name) + estimate_tokens(c.arguments) for c in message.tool_calls)
    )


def history_tokens(messages: list[Message]) -> int:
    _, history, _ = split(messages)
    return sum(count(m) for m in history)


def budget_for(messages: list[Message], ctx: int = 8192, reserve: int = 1024) -> int:
    return ctx - count(messages[0]) - count(messages[-1]) - reserve - 64


def assert_tool_pairs_consistent(messages: list[Message]) -> None:
    open_calls: set[str] = set()
    for message in messages:
        if message.tool_calls:
            open_calls |= {c.id for c in message.tool_calls if c.id}
        if message.role == "tool":
            assert message.tool_call_id in open_calls, f"orphan tool result {message.tool_call_id}"
            open_calls.discard(message.tool_call_id)
    assert not open_calls, f"tool calls without results: {open_calls}"


def test_forty_turn_coding_conversation_fits_and_keeps_every_code_block() -> None:
    messages = coding_conversation(40)
    budget = budget_for(messages)
    assert history_tokens(messages) > budget * 3  # really over budget to start with
    outcome = compress_history(messages, budget=budget, count=count)
    assert outcome.fits and outcome.history_after <= budget
    assert sum(count(m) for m in outcome.messages[1:-1]) == outcome.history_after  # facts block counted
    text = "\n".join(m.content for m in outcome.messages)
    for turn in range(1, 41):
        if turn % 7:
            assert code_block(turn) in text, f"code block of turn {turn} lost"
    for turn in (4, 8, 12, 16, 20, 24, 32, 36, 40):  # tracebacks of user turns survive whole
        assert traceback_text(turn) in text
    assert outcome.messages[-1] == messages[-1]  # latest user turn intact
    assert outcome.messages[0] == messages[0] and outcome.messages[0].content == SYSTEM
    assert outcome.messages[1].role == "system" and outcome.messages[1].content.startswith("[CONTEXT:")
    assert_tool_pairs_consistent(outcome.messages)
    assert outcome.saved > 0


@pytest.mark.parametrize(
    ("turns", "tier"), [(3, "FULL"), (6, "RECENT_PLUS_FACTS"), (9, "COMPRESSED"), (12, "EMERGENCY")]
)
def test_tier_follows_fill_ratio(turns: int, tier: str) -> None:
    messages = coding_conversation(turns)
    budget = budget_for(messages)
    ratio = history_tokens(messages) / budget
    outcome = compress_history(messages, budget=budget, count=count)
    expected = (
        "FULL"
        if ratio < 0.55
        else "RECENT_PLUS_FACTS"
        if ratio < 0.75
        else "COMPRESSED"
        if ratio < 0.90
        else "EMERGENCY"
    )
    assert outcome.tier == tier == expected
    assert outcome.fits
    if tier == "FULL":
        assert outcome.messages == messages
    else:
        assert outcome.history_after < outcome.history_before


def test_escalates_when_a_tier_does_not_fit() -> None:
    messages = coding_conversation(12)
    budget = budget_for(messages)
    # the first tier would start at 99 % here, and its result (recent 8 verbatim) cannot fit
    outcome = compress_history(messages, budget=budget // 2, count=count, thresholds=(0.99, 10.0, 11.0))
    names = [a[0] for a in outcome.attempts]
    assert names[0] == "RECENT_PLUS_FACTS" and len(names) > 1
    assert outcome.attempts[0][2] > budget // 2
    assert outcome.fits and outcome.history_after <= budget // 2


def test_never_cuts_silently_when_even_emergency_does_not_fit() -> None:
    messages = coding_conversation(40)
    outcome = compress_history(messages, budget=300, count=count)
    assert not outcome.fits and outcome.messages == messages and outcome.saved == 0
    assert outcome.attempts[-1][:2] == ("EMERGENCY", 0)


def test_tool_window_boundary_keeps_pairs() -> None:
    messages = coding_conversation(10)
    for recent in range(0, 12):
        from autotune_plugins.context_compressor.window import DEFAULT_RULES, assemble

        prefix, history, tail = split(messages)
        for rule in DEFAULT_RULES:
            assert_tool_pairs_consistent(assemble(prefix, history, tail, rule, recent))


def test_cuts_only_at_sentence_boundaries() -> None:
    prose = " ".join(f"Sentence number {i} explains one more detail of the design." for i in range(80))
    kept, omitted = cut_prose(prose, 500)
    assert omitted > 0 and kept.endswith(".") and kept in prose and len(kept) <= 500
    one = "x" * 900  # no boundary at all: kept whole rather than cut mid-sentence
    assert cut_prose(one, 100) == (one, 0)
    long_answer = (
        "Intro paragraph. It has two sentences.\n\n"
        + prose
        + "\n\n"
        + code_block(1)
        + "\n\n"
        + prose
        + "\n\nFinal words here. Done."
    )
    out = compress_message("assistant", long_answer, aggressive=True)
    assert code_block(1) in out and out.startswith("Intro paragraph. It has two sentences.")
    for line in out.split("\n"):
        if line and not line.startswith(("```", "def ", "    ", "[…")):
            assert re.search(r"[.!?]$", line), line


def test_noise_json_and_tool_head_tail() -> None:
    noisy = "\x1b[31mred\x1b[0m\n" + "same line\n" * 10 + "\n\n\n\nend"
    cleaned = strip_noise(noisy)
    assert "\x1b" not in cleaned and "repeated 9 more times" in cleaned and "\n\n\n" not in cleaned
    blob = '{"a": 1, "items": [' + ", ".join(str(i) for i in range(80)) + '], "b": "x"}'
    assert fold_json(f"result: {blob} ok") == "result: {/* 3 keys: a, items, b */} ok"
    assert fold_json('{"short": 1}') == '{"short": 1}'
    assert fold_json("{not json " + "y" * 200 + "}").startswith("{not json")  # invalid: left alone
    fenced = "```json\n" + blob + "\n```"
    assert compress_message("assistant", fenced) == fenced  # never inside code blocks
    log = (
        "\n".join(f"line {i}" for i in range(40))
        + "\n"
        + traceback_text(3)
        + "\n"
        + "\n".join(f"after {i}" for i in range(20))
    )
    out = compress_message("tool", log)
    assert traceback_text(3) in out and "line 0" in out and "after 19" in out and "lines omitted" in out
    assert "line 25" not in out


async def test_stateless_request_is_compressed_in_pre_request_with_trace(autotune_host_factory: Any) -> None:
    host = autotune_host_factory(ContextCompressorPlugin())
    messages = coding_conversation(40)
    request = ChatRequest(model="llama3.2:1b", messages=messages)
    prepared = await Pipeline(host).plan(request, host.backend("fake"), LLAMA_1B)
    plan = prepared.plan
    assert len(plan.messages) < len(messages) and plan.messages[-1] == messages[-1]
    entry = next(e for e in plan.trace if e.plugin == "context-compressor")
    assert entry.knob == "messages" and "tier EMERGENCY" in entry.reason and "saved" in entry.reason
    assert plan.flags["compression"]["saved_tokens"] > 10_000
    assert "messages=context-compressor" in plan.compact_trace()
    assert request.messages == messages  # the client's request object is untouched


async def test_budget_uses_model_trained_context_and_max_tokens(autotune_host_factory: Any) -> None:
    host = autotune_host_factory(ContextCompressorPlugin())
    small = LLAMA_1B.model_copy(update={"context_length": 4096})
    messages = coding_conversation(6)
    request = ChatRequest(model="llama3.2:1b", messages=messages, max_tokens=256)
    plan = (await Pipeline(host).plan(request, host.backend("fake"), small)).plan
    expected = 4096 - count(messages[0]) - count(messages[-1]) - 256 - 64
    assert plan.flags["compression"]["budget"] == expected


@pytest.mark.parametrize("how", ["env", "config"])
async def test_toggle_off_leaves_messages_alone(how: str, autotune_host_factory: Any) -> None:
    messages = coding_conversation(40)
    if how == "env":
        host = autotune_host_factory(env={"AUTOTUNE_DISABLE_PLUGINS": "context-compressor"}, load_entrypoints=True)
    else:
        config = CoreSettings(backend="fake", plugins={"disabled": ["context-compressor"]})
        host = autotune_host_factory(config=config, load_entrypoints=True)
    assert not host.enabled("context-compressor")
    plan = (
        await Pipeline(host).plan(ChatRequest(model="llama3.2:1b", messages=messages), host.backend("fake"), LLAMA_1B)
    ).plan
    assert plan.messages == messages and not any(e.plugin == "context-compressor" for e in plan.trace)
    on = autotune_host_factory(env={"AUTOTUNE_LOAD_PLUGINS": "context-compressor"}, load_entrypoints=True)
    assert on.enabled("context-compressor")


def test_settings_are_validated(autotune_host_factory: Any) -> None:
    from autotune_core.errors import ConfigError

    bad = CoreSettings(backend="fake", plugins={"settings": {"context-compressor": {"thresholds": [0.9, 0.5, 0.7]}}})
    with pytest.raises(ConfigError, match="context-compressor"):
        autotune_host_factory(ContextCompressorPlugin(), config=bad)


def test_tool_message_keeps_its_call_id_when_compressed() -> None:
    call = ToolCall(id="c1", name="ls", arguments="{}")
    big = "\n".join(f"file_{i}.txt" for i in range(100))
    history = [Message(role="system", content="s")]
    for i in range(12):
        history += [
            Message(role="user", content=f"list the files please, round {i}?"),
            Message(role="assistant", tool_calls=[call.model_copy(update={"id": f"c{i}"})]),
            Message(role="tool", tool_call_id=f"c{i}", content=big),
            Message(role="assistant", content=f"There are 100 files in round {i}."),
        ]
    history.append(Message(role="user", content="and now?"))
    outcome = compress_history(history, budget=1500, count=count)
    assert outcome.fits
    assert_tool_pairs_consistent(outcome.messages)
