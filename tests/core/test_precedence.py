"""The precedence rule: the client's explicit value, then the model's config, then the plugins; only a safety
choice may lower a pinned value, and then the plan carries a warning."""

from __future__ import annotations

from typing import Any

import pytest
from core_helpers import Boom, Fixed

from autotune_core import ChatRequest, Choice, Message, PluginHost, fold_stage, hookimpl
from autotune_core.config import ModelOverride, validate_settings
from autotune_core.modelinfo import smaller_kv_type
from autotune_core.plan import Plan
from autotune_core.precedence import Pin, client_pins, config_pins, lowers, pins_for


def request(**fields: Any) -> ChatRequest:
    fields.setdefault("messages", [Message(role="user", content="hello")])
    return ChatRequest(model="llama3.2:1b", **fields)


def pinned(knob: str = "num_ctx", value: Any = 8192) -> Plan:
    plan = Plan(model="m")
    plan.pins = {knob: Pin(knob=knob, value=value, source="client", origin=f"options.{knob}")}
    setattr(plan, knob, value)
    return plan


class Guard:
    """A guard-stage num_ctx step that lowers for safety (or not)."""

    def __init__(self, value: int, *, safety: bool) -> None:
        self.name, self.value, self.safety = "guard", value, safety

    @hookimpl
    @fold_stage("guard")
    def choose_num_ctx(self, proposal: Choice[int] | None) -> Choice[int]:
        return Choice(self.value, "would not fit", safety=self.safety)


def fold(host: PluginHost, plan: Plan) -> Choice[Any] | None:
    return host.fold("choose_num_ctx", knob="num_ctx", plan=plan, initial=None, conservative=min)


def test_client_pins_read_every_knob_the_client_can_set() -> None:
    pins = client_pins(
        request(
            options={"num_ctx": 8192, "num_batch": 256, "num_keep": 4, "num_thread": 3, "kv_cache_type": "Q8_0"},
            keep_alive="5m",
            max_tokens=64,
        )
    )
    assert {knob: pin.value for knob, pin in pins.items()} == {
        "num_ctx": 8192,
        "num_batch": 256,
        "num_keep": 4,
        "num_thread": 3,
        "kv_type": "q8_0",
        "keep_alive": 300.0,
        "max_tokens": 64,
    }
    assert pins["keep_alive"].sent == "5m" and pins["kv_type"].origin == "options.kv_cache_type"
    assert pins["num_ctx"].describe() == "client asked 8192 (options.num_ctx)"


@pytest.mark.parametrize(
    "bad", [{"num_ctx": "big"}, {"num_ctx": True}, {"num_ctx": -1}, {"num_ctx": 1.5}, {"kv_type": "q9"}]
)
def test_values_autotune_cannot_read_are_not_pinned(bad: dict[str, Any]) -> None:
    assert client_pins(request(options=bad)) == {}  # passed through for the server (or kv-precision) to judge
    assert client_pins(request(keep_alive="10 minutes")) == {}


def test_the_client_wins_over_config_which_stays_pinned_in_tune_mode() -> None:
    override = ModelOverride(num_ctx=6144, keep_alive="30m")
    assert config_pins("m", override)["keep_alive"].value == 1800.0
    both = pins_for(request(options={"num_ctx": 8192}), override, "respect")
    assert (both["num_ctx"].source, both["num_ctx"].value, both["keep_alive"].source) == ("client", 8192, "config")
    tuned = pins_for(request(options={"num_ctx": 8192}), override, "tune")
    assert (tuned["num_ctx"].source, tuned["num_ctx"].value) == ("config", 6144)
    per_model = pins_for(request(options={"num_ctx": 8192}), ModelOverride(client_overrides="tune"), "respect")
    assert per_model == {}


def test_lowers_knows_which_way_is_safer() -> None:
    assert lowers("num_ctx", 8192, 4096) and not lowers("num_ctx", 4096, 8192) and not lowers("num_ctx", 1, 1)
    assert lowers("kv_type", "f16", "q8_0") and not lowers("kv_type", "q8_0", "f16")
    assert not lowers("keep_alive", 600, 0) and not lowers("num_keep", 24, 0)  # not memory: never lowered


def test_a_pinned_knob_keeps_its_value_and_traces_every_proposal(autotune_host_factory: Any) -> None:
    host = autotune_host_factory(
        Fixed("sizing", 1536, "propose"), Fixed("buckets", 2048, "snap"), Fixed("ceiling", 4096, "adjust")
    )
    plan = pinned()
    result = fold(host, plan)
    assert result is not None and result.value == 8192
    kept = [(e.plugin, e.proposed, e.new) for e in plan.steps("num_ctx") if e.kept]
    assert kept == [("sizing", 1536, 8192), ("buckets", 2048, 8192), ("ceiling", 4096, 8192)]
    assert "1536 proposed (sizing says 1536); client asked 8192 (options.num_ctx): kept" in [
        e.reason for e in plan.trace
    ]
    assert plan.warnings == [] and "sizing~1536" in plan.compact_trace()


def test_only_a_safety_choice_lowers_a_pin_and_it_warns(autotune_host_factory: Any) -> None:
    plan = pinned()
    assert fold(autotune_host_factory(Guard(2048, safety=False)), plan).value == 8192  # type: ignore[union-attr]
    assert plan.warnings == []
    plan = pinned()
    assert fold(autotune_host_factory(Guard(2048, safety=True)), plan).value == 2048  # type: ignore[union-attr]
    assert plan.warnings == [
        "num_ctx lowered from 8192 (client asked 8192 (options.num_ctx)) to 2048 by guard: would not fit"
    ]
    plan = pinned()
    assert fold(autotune_host_factory(Guard(16384, safety=True)), plan).value == 8192  # type: ignore[union-attr]  never raised


def test_a_failing_guard_keeps_the_clients_value(autotune_host_factory: Any) -> None:
    plan = pinned()
    host = autotune_host_factory(Fixed("sizing", 1024, "propose"), Boom("bad-guard", "guard"))
    assert fold(host, plan).value == 8192  # type: ignore[union-attr]


def test_plan_set_follows_the_same_rule() -> None:
    plan = pinned("num_batch", 256)
    assert not plan.set("prefill", "num_batch", 1024, "default")
    assert plan.num_batch == 256 and plan.trace[-1].kept
    assert plan.set("guard", "num_batch", 128, "critical pressure", safety=True)
    assert plan.num_batch == 128 and plan.warnings
    free = Plan(model="m")
    assert free.set("prefill", "num_batch", 1024, "default") and free.num_batch == 1024
    assert free.client_values() == []


def test_kv_fold_pin_lowered_for_safety(autotune_host_factory: Any) -> None:
    class KvGuard:
        name = "kv-guard"

        @hookimpl
        @fold_stage("guard")
        def choose_kv_type(self, proposal: Choice[str] | None) -> Choice[str]:
            return Choice("q4_0", "tight", safety=True)

    plan = pinned("kv_type", "f16")
    result = autotune_host_factory(KvGuard()).fold(
        "choose_kv_type", knob="kv_type", plan=plan, initial=None, conservative=smaller_kv_type
    )
    assert result is not None and result.value == "q4_0" and "kv_type lowered from f16" in plan.warnings[0]


def test_pipeline_pins_before_the_hooks_and_plan_shows_the_clients_values(
    autotune_host_factory: Any, autotune_plan: Any
) -> None:
    seen: dict[str, Any] = {}

    class Peek:
        name = "peek"

        @hookimpl
        def pre_request(self, plan: Plan) -> None:
            seen["num_ctx"] = plan.num_ctx  # the client's value is on the plan before any hook runs
            plan.set(self.name, "num_keep", 99, "peek wants it")

    host = autotune_host_factory(Peek())
    plan = autotune_plan(host, request(options={"num_ctx": 3000, "num_keep": 7}, max_tokens=50))
    assert seen == {"num_ctx": 3000} and (plan.num_ctx, plan.num_keep, plan.max_tokens) == (3000, 7, 50)
    assert {v["knob"]: (v["asked"], v["sent"], v["kept"]) for v in plan.client_values()} == {
        "num_ctx": (3000, 3000, True),
        "num_keep": (7, 7, True),
        "max_tokens": (50, 50, True),
    }


def test_a_prompt_larger_than_the_clients_context_goes_as_asked_with_a_warning(
    autotune_host_factory: Any, autotune_plan: Any
) -> None:
    host = autotune_host_factory()
    long = request(options={"num_ctx": 64}, messages=[Message(role="user", content="word " * 400)])
    plan = autotune_plan(host, long)
    assert plan.num_ctx == 64 and "will drop the start of it" in plan.warnings[0]
    assert autotune_plan(host, long.model_copy(update={"options": {}})).warnings == []


def test_tune_mode_from_config(autotune_host_factory: Any, autotune_plan: Any) -> None:
    config = validate_settings({"backend": "fake", "client_overrides": "tune"}, "<test>")

    class Sizer:
        name = "sizer"

        @hookimpl
        @fold_stage("propose")
        def choose_num_ctx(self, proposal: Choice[int] | None) -> Choice[int]:
            return Choice(2048, "sized")

    host = autotune_host_factory(Sizer(), config=config)
    assert autotune_plan(host, request(options={"num_ctx": 8192})).num_ctx == 2048
