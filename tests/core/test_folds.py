"""Fold order and fault isolation: stages, tryfirst/trylast, failing guards and proposers."""

from __future__ import annotations

from typing import Any

import pytest
from core_helpers import Boom, Fixed

from autotune_core import Choice, PluginHost, RequestRejected, fold_stage, hookimpl
from autotune_core.modelinfo import smaller_kv_type
from autotune_core.plan import Plan


def fold(host: PluginHost, initial: int | None = None, plan: Plan | None = None) -> tuple[Choice[Any] | None, Plan]:
    plan = plan or Plan(model="m")
    start = Choice(initial, "initial") if initial is not None else None
    result = host.fold("choose_num_ctx", knob="num_ctx", plan=plan, initial=start, conservative=min)
    return result, plan


def test_stages_order_the_fold_whatever_the_registration_order(autotune_host_factory):
    host = autotune_host_factory(
        Fixed("g", 1000, "guard"), Fixed("a", 3000, "adjust"), Fixed("s", 4096, "snap"), Fixed("p", 3500, "propose")
    )
    assert host.hook_order("choose_num_ctx") == ["p", "s", "a", "g"]
    result, plan = fold(host)
    assert result == Choice(1000, "g says 1000")
    assert [(e.plugin, e.old, e.new) for e in plan.steps("num_ctx")] == [
        ("p", None, 3500),
        ("s", 3500, 4096),
        ("a", 4096, 3000),
        ("g", 3000, 1000),
    ]


def test_default_stage_is_adjust(autotune_host_factory):
    class Plain:
        name = "plain"

        @hookimpl
        def choose_num_ctx(self, proposal):
            return None

    host = autotune_host_factory(Plain(), Fixed("p", 1, "propose"), Fixed("g", 1, "guard"))
    assert host.hook_order("choose_num_ctx") == ["p", "plain", "g"]
    assert host.records["plain"].fold_positions == {"choose_num_ctx": "adjust #2"}


def test_tryfirst_and_trylast_order_within_a_stage_and_lifo_otherwise(autotune_host_factory):
    host = autotune_host_factory(
        Fixed("first", 1, "adjust", "tryfirst"),
        Fixed("x", 2, "adjust"),
        Fixed("y", 3, "adjust"),
        Fixed("last", 4, "adjust", "trylast"),
        Fixed("guard", None, "guard", "tryfirst"),
    )
    # within adjust: tryfirst, then the rest last-registered-first, then trylast; tryfirst never jumps a stage
    assert host.hook_order("choose_num_ctx") == ["first", "y", "x", "last", "guard"]
    assert fold(host)[0] == Choice(4, "last says 4")


def test_none_keeps_the_proposal_and_is_not_traced(autotune_host_factory):
    host = autotune_host_factory(
        Fixed("p", 2048, "propose"), Fixed("quiet", None, "adjust"), Fixed("same", 2048, "snap")
    )
    result, plan = fold(host)
    assert result is not None and result.value == 2048
    assert [e.plugin for e in plan.trace] == ["p"]  # "same" returned the same value: no trace entry


def test_a_failing_proposer_is_skipped_and_counted(autotune_host_factory):
    host = autotune_host_factory(Fixed("p2", 3000, "snap"), Boom("boom", "propose"), Fixed("p1", 2000, "propose"))
    result, _ = fold(host)
    assert result == Choice(3000, "p2 says 3000")
    record = host.records["boom"]
    assert record.failures == 1
    assert record.last_failure == "choose_num_ctx: RuntimeError: boom exploded"
    fold(host)
    assert record.failures == 2


def test_a_failing_guard_keeps_the_most_conservative_value(autotune_host_factory):
    host = autotune_host_factory(
        Boom("bad-guard", "guard"), Fixed("big", 8192, "adjust"), Fixed("small", 2048, "propose")
    )
    result, plan = fold(host)
    assert result is not None and result.value == 2048
    last = plan.trace[-1]
    assert (last.plugin, last.old, last.new) == ("bad-guard", 8192, 2048)
    assert "guard failed" in last.reason
    assert host.records["bad-guard"].failures == 1


def test_a_failing_guard_on_kv_type_keeps_the_smaller_type(autotune_host_factory):
    class F16:
        name = "f16"

        @hookimpl
        @fold_stage("adjust")
        def choose_kv_type(self, proposal):
            return Choice("f16", "profile")

    host = autotune_host_factory(Boom("kv-guard", "guard", hook="choose_kv_type"), F16())
    plan = Plan(model="m")
    result = host.fold(
        "choose_kv_type", knob="kv_type", plan=plan, initial=Choice("q8_0", "start"), conservative=smaller_kv_type
    )
    assert result is not None and result.value == "q8_0"


def test_a_failing_guard_with_nothing_seen_changes_nothing(autotune_host_factory):
    host = autotune_host_factory(Boom("lonely-guard", "guard"))
    result, plan = fold(host)
    assert result is None and plan.trace == []


def test_a_wrong_return_type_is_a_failure(autotune_host_factory):
    class Raw:
        name = "raw"

        @hookimpl
        @fold_stage("propose")
        def choose_num_ctx(self, proposal):
            return 4096  # should be Choice(4096, "...")

    host = autotune_host_factory(Raw())
    result, _ = fold(host, initial=1024)
    assert result == Choice(1024, "initial")
    assert "must return Choice or None, got int" in host.records["raw"].last_failure


def test_rejections_are_not_isolated(autotune_host_factory):
    class Gate:
        name = "gate"

        @hookimpl
        @fold_stage("guard")
        def choose_num_ctx(self, proposal):
            raise RequestRejected("too big for this machine")

    with pytest.raises(RequestRejected, match="too big"):
        fold(autotune_host_factory(Gate(), Fixed("p", 99, "propose")))


def test_unknown_stage_is_refused():
    with pytest.raises(ValueError, match="unknown fold stage 'later'"):
        fold_stage("later")


def test_fold_positions_are_reported_per_plugin(autotune_host_factory):
    host = autotune_host_factory(Fixed("g", 1, "guard"), Fixed("p", 1, "propose"))
    assert host.records["p"].fold_positions == {"choose_num_ctx": "propose #1"}
    assert host.records["g"].fold_positions == {"choose_num_ctx": "guard #2"}
    assert host.records["core"].fold_positions == {}


def test_skip_leaves_a_plugin_out_of_one_fold(autotune_host_factory):
    host = autotune_host_factory(Fixed("p", 4096, "propose"), Fixed("a", 1024, "adjust"))
    plan = Plan(model="m")
    result = host.fold(
        "choose_num_ctx", knob="num_ctx", plan=plan, initial=None, conservative=min, skip=frozenset({"a"})
    )
    assert result is not None and result.value == 4096


def test_a_plugin_may_sit_at_two_stages_with_specname(autotune_host_factory):
    class Both:
        name = "both"

        @hookimpl(tryfirst=True)
        @fold_stage("propose")
        def choose_num_ctx(self, proposal):
            return Choice(8192, "first guess")

        @hookimpl(specname="choose_num_ctx")
        @fold_stage("guard")
        def never_above_4k(self, proposal):
            return Choice(min(proposal.value, 4096), "hard limit") if proposal else None

    host = autotune_host_factory(Both(), Fixed("a", 6000, "adjust"))
    assert host.hook_order("choose_num_ctx") == ["both", "a", "both"]
    assert [(i.stage, i.tryfirst) for i in host.hook_impls("choose_num_ctx")] == [
        ("propose", True),
        ("adjust", False),
        ("guard", False),
    ]
    assert host.records["both"].fold_positions == {"choose_num_ctx": "propose #1, guard #3"}
    assert host.records["both"].hooks == ["choose_num_ctx"]
    assert fold(host)[0] == Choice(4096, "hard limit")
