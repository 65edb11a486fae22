"""Plan.compact_trace: what X-Autotune-Plan carries on every response."""

from __future__ import annotations

import json

import pytest

from autotune_core.plan import Plan


def test_compact_trace_orders_knobs_and_keeps_each_chain() -> None:
    plan = Plan(model="m")
    plan.record("ctx-sizing", "num_ctx", None, 2048, "fits")
    plan.record("kv-precision", "kv_type", None, "q8_0", "saves memory")
    plan.record("ctx-buckets", "num_ctx", 2048, 4096, "bucket")
    plan.record("os-tuner", "os.nice", None, "applied", "not a summarised knob")
    plan.record("keep-alive", "keep_alive", None, -1.0, "pinned")
    assert plan.compact_trace() == (
        "num_ctx=ctx-sizing>2048,ctx-buckets>4096;kv_type=kv-precision>q8_0;keep_alive=keep-alive>-1.0"
    )


def test_compact_trace_is_header_safe_and_bounded() -> None:
    plan = Plan(model="m")
    plan.record("plügin\r\n", "num_ctx", None, "8192\x00é", "")
    assert plan.compact_trace() == "num_ctx=plgin>8192"
    for index in range(300):
        plan.record(f"p{index}", "num_batch", None, index, "")
    text = plan.compact_trace(limit=100)
    assert len(text) == 100 and text.isascii() and text.isprintable()
    assert Plan(model="m").compact_trace() == ""


def test_plan_dumps_and_copies_as_the_pydantic_model_did() -> None:
    """Plan is a slots dataclass for speed; its pydantic-style API keeps working for ``autotune plan --json``,
    plugins and tests."""
    from autotune_core.messages import Message
    from autotune_core.precedence import Pin

    plan = Plan(model="m", messages=[Message(role="user", content="hi")], num_ctx=4096)
    plan.record("ctx-sizing", "num_ctx", None, 4096, "why")
    plan.pins["max_tokens"] = Pin(knob="max_tokens", value=16, source="client", origin="max_tokens")
    plan.flags["swap_risk"] = True
    dumped = plan.model_dump(exclude={"messages"})
    assert "messages" not in dumped and dumped["num_ctx"] == 4096 and dumped["flags"] == {"swap_risk": True}
    assert dumped["trace"][0] == {
        "plugin": "ctx-sizing",
        "knob": "num_ctx",
        "old": None,
        "new": 4096,
        "reason": "why",
        "proposed": None,
        "kept": False,
    }
    assert dumped["pins"]["max_tokens"]["source"] == "client"
    assert json.loads(plan.model_dump_json())["messages"] == [
        {**Message(role="user", content="hi").model_dump(mode="json")}
    ]
    shallow = plan.model_copy(update={"num_ctx": 512})
    assert shallow.num_ctx == 512 and plan.num_ctx == 4096 and shallow.trace is plan.trace  # pydantic's rule
    deep = plan.model_copy(deep=True)
    assert deep == plan and deep.trace is not plan.trace and deep.messages[0] is not plan.messages[0]
    with pytest.raises(AttributeError):
        plan.no_such_knob = 1  # type: ignore[attr-defined]
