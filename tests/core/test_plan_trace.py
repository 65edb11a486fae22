"""Plan.compact_trace: what X-Autotune-Plan carries on every response."""

from __future__ import annotations

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
