"""Tests for max-context-cap, written the way a third-party author would: only with the fixtures
autotune ships as a pytest plugin (no conftest of our own)."""

from __future__ import annotations

import pytest
from autotune_example_plugin import MaxContextCapPlugin

from autotune_core import ChatRequest, Choice, Message, fold_stage, hookimpl
from autotune_core.errors import ConfigError, ContextOverflow


class Propose:
    """Stands in for the sizing plugins: proposes a fixed num_ctx."""

    name = "propose-fixed"

    def __init__(self, value: int) -> None:
        self.value = value

    @hookimpl
    @fold_stage("propose")
    def choose_num_ctx(self, proposal):
        return Choice(self.value, "test proposal")


class Guard:
    """Stands in for noswap-guard: halves whatever it receives, in the guard stage."""

    name = "halving-guard"

    @hookimpl
    @fold_stage("guard")
    def choose_num_ctx(self, proposal):
        return Choice(proposal.value // 2, "guard") if proposal else None


def test_caps_a_larger_proposal_and_traces_it(autotune_host_factory, autotune_plan):
    host = autotune_host_factory(
        Propose(16384), MaxContextCapPlugin(), config={"plugins": {"max-context-cap": {"ceiling": 4096}}}
    )
    plan = autotune_plan(host, "hello")
    assert plan.num_ctx == 4096
    step = plan.steps("num_ctx")[-1]
    assert (step.plugin, step.old, step.new) == ("max-context-cap", 16384, 4096)


def test_leaves_a_smaller_proposal_alone(autotune_host_factory, autotune_plan):
    host = autotune_host_factory(
        Propose(2048), MaxContextCapPlugin(), config={"plugins": {"max-context-cap": {"ceiling": 4096}}}
    )
    plan = autotune_plan(host, "hello")
    assert plan.num_ctx == 2048
    assert [s.plugin for s in plan.steps("num_ctx")] == ["propose-fixed"]


def test_no_ceiling_means_no_change(autotune_host_factory, autotune_plan):
    host = autotune_host_factory(Propose(16384), MaxContextCapPlugin())
    assert autotune_plan(host, "hello").num_ctx == 16384


@pytest.mark.parametrize("model_architecture", ["llama3.2:1b", "gemma3:270m"], indirect=True)
def test_per_model_ceiling_overrides_global(autotune_host_factory, autotune_plan, model_architecture):
    config = {"plugins": {"max-context-cap": {"ceiling": 8192, "per_model": {"gemma3:270m": 1024}}}}
    host = autotune_host_factory(Propose(16384), MaxContextCapPlugin(), config=config)
    plan = autotune_plan(host, "hello", model=model_architecture.name)
    assert plan.num_ctx == (1024 if model_architecture.name == "gemma3:270m" else 8192)


def test_guard_runs_after_the_cap(autotune_host_factory, autotune_plan):
    host = autotune_host_factory(
        Guard(), MaxContextCapPlugin(), Propose(16384), config={"plugins": {"max-context-cap": {"ceiling": 4096}}}
    )
    assert host.hook_order("choose_num_ctx") == ["propose-fixed", "max-context-cap", "halving-guard"]
    assert autotune_plan(host, "hello").num_ctx == 2048


def test_a_prompt_longer_than_the_cap_is_refused_not_cut(autotune_host_factory, autotune_plan):
    host = autotune_host_factory(
        Propose(16384), MaxContextCapPlugin(), config={"plugins": {"max-context-cap": {"ceiling": 256}}}
    )
    long = ChatRequest(model="llama3.2:1b", messages=[Message(role="user", content="word " * 400)])
    with pytest.raises(ContextOverflow):
        autotune_plan(host, long)


@pytest.mark.parametrize(
    "settings, fragment",
    [
        ({"ceiling": 10}, "plugins.max-context-cap.ceiling"),
        ({"ceiling": "big"}, "plugins.max-context-cap.ceiling"),
        ({"ceilin": 4096}, "plugins.max-context-cap.ceilin"),
        ({"per_model": {"gemma3:270m": 100}}, "plugins.max-context-cap.per_model.gemma3:270m"),
    ],
)
def test_invalid_settings_name_the_key(autotune_host_factory, settings, fragment):
    with pytest.raises(ConfigError) as info:
        autotune_host_factory(MaxContextCapPlugin(), config={"plugins": {"max-context-cap": settings}})
    assert fragment in str(info.value)


def test_listed_with_its_hook_and_fold_position(autotune_host_factory):
    host = autotune_host_factory(MaxContextCapPlugin())
    record = host.records["max-context-cap"]
    assert record.hooks == ["choose_num_ctx"]
    assert record.fold_positions == {"choose_num_ctx": "adjust #1"}
