"""session-advisor: score, states, ordered actions under synthetic pressure with a cooldown, scale-up
after stability (fake clock, no sleeping), the knobs it applies, status and the CLI, toggle."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from autotune_core import ChatRequest, Choice, Message, PluginHost, fold_stage, hookimpl
from autotune_core.pipeline import Pipeline
from autotune_core.pytest_plugin import make_host
from autotune_core.testing import LLAMA_1B, FakeBackend
from autotune_plugins.session_advisor import SessionAdvisorPlugin
from autotune_plugins.session_advisor.health import GB, Advisor, Sample, health_score
from autotune_plugins.session_advisor.sampler import SystemSampler, linux_thermal, parse_pmset


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeSampler:
    def __init__(self) -> None:
        self.next = Sample(ram_percent=40.0)

    def sample(self) -> Sample:
        return self.next


class Proposer:
    """Proposes num_ctx 8192 and KV f16, as the sizing plugins would."""

    name = "proposer"

    @hookimpl
    @fold_stage("propose")
    def choose_num_ctx(self, proposal: Any) -> Choice[int]:
        return Choice(8192, "test proposal")

    @hookimpl
    @fold_stage("propose")
    def choose_kv_type(self, proposal: Any) -> Choice[str]:
        return Choice("f16", "test proposal")


def make(settings: dict[str, Any] | None = None) -> tuple[PluginHost, SessionAdvisorPlugin, Clock, FakeSampler]:
    """The shipped host (make_host) with a proposer and an advisor on a fake clock and sampler, its state built."""
    clock, sampler = Clock(), FakeSampler()
    plugin = SessionAdvisorPlugin(sampler=sampler, clock=clock)
    host = make_host(Proposer(), plugin, settings={"session-advisor": settings or {}})
    plugin.ensure(host)
    return host, plugin, clock, sampler


def test_health_score_matches_the_original_deductions() -> None:
    assert health_score(Sample(ram_percent=50)) == 100
    assert health_score(Sample(ram_percent=95)) == 70
    assert health_score(Sample(ram_percent=50, gpu_memory_percent=98)) == 60  # VRAM wins when present
    assert (
        health_score(
            Sample(ram_percent=91, swap_percent=12, thermal="throttling", cpu_percent=80), swap_growth_mb_min=60
        )
        == 100 - 18 - 22 - 10 - 12 - 5
    )
    assert (
        health_score(
            Sample(ram_percent=99, swap_percent=30, thermal="critical", cpu_percent=99),
            swap_growth_mb_min=100,
            ram_growth_mb_min=400,
        )
        == 0
    )


async def test_actions_under_pressure_respect_cooldown_then_scale_up() -> None:
    host, plugin, clock, sampler = make()
    backend = host.backend("fake")
    assert isinstance(backend, FakeBackend)
    # a model used long ago is loaded: the unload step should find it idle
    backend.loaded["llama3.2:1b"] = (4096, None)
    plugin.last_used[("fake", "llama3.2:1b")] = clock.now - 500
    sampler.next = Sample(ram_percent=91.0)  # ≥ 88 %: ACTION_NEEDED
    taken: list[str] = []
    for _ in range(120):  # 120 s of pressure, one sample a second
        taken += [a.kind for a in await plugin.tick_once()]
        clock.now += 1
    assert taken == [
        "reduce_concurrency",
        "reduce_context",
        "lower_kv_precision",
        "unload_idle_models",
        "switch_to_smaller_model",
    ]
    times = [a.at for a in plugin.advisor.actions]  # type: ignore[union-attr]
    assert all(b - a >= 20 for a, b in itertools.pairwise(times))
    assert plugin.advisor.state == "ACTION_NEEDED" and plugin.advisor.score == 82  # type: ignore[union-attr]
    assert plugin.recommended_concurrency == 1 and host.concurrency_cap == 1  # what the server's queue reads
    status = plugin.status()
    assert status["context_ceiling"] == 4096 and status["kv_type_next_load"] == "q8_0"
    assert "llama3.2:1b" not in backend.loaded and status["unloaded"] == ["fake/llama3.2:1b"]
    assert "RAM 91 %" in status["recent_actions"][0]["why"]
    # recovery: signals ok; no scale-up before 90 s of stability, then one step per 90 s, newest first
    sampler.next = Sample(ram_percent=50.0)
    ups: list[tuple[float, str]] = []
    start = clock.now
    for _ in range(400):
        for action in await plugin.tick_once():
            ups.append((clock.now - start, action.detail))
        if clock.now - start == 30:
            assert plugin.advisor.state == "STABLE_RECOVERING"  # type: ignore[union-attr]
        clock.now += 1
    assert [detail for _, detail in ups] == [
        "KV cache back to f16 at the next load",
        "context ceiling back to 8192",
        "max concurrent back to 2",
    ]
    assert [t for t, _ in ups] == [90, 180, 270]
    assert plugin.advisor.state == "OPTIMAL" and plugin.recommended_concurrency == 2  # type: ignore[union-attr]
    assert host.concurrency_cap is None  # back to the configured maximum
    assert status["advice"] and not plugin.status()["advice"]
    # pressure again: the ladder starts over (the original used each step once per session)
    sampler.next = Sample(ram_percent=91.0)
    assert [a.kind for a in await plugin.tick_once()] == ["reduce_concurrency"]


async def test_critical_states_and_degrading() -> None:
    _, plugin, clock, sampler = make()
    states = []
    for sample in (Sample(ram_percent=82), Sample(ram_percent=96), Sample(ram_percent=83), Sample(ram_percent=40)):
        sampler.next = sample
        await plugin.tick_once()
        states.append(plugin.advisor.state)  # type: ignore[union-attr]
        clock.now += 1
    assert states == ["WARNING", "CRITICAL", "DEGRADING", "STABLE_RECOVERING"]


def test_performance_signals_need_a_baseline() -> None:
    clock = Clock()
    advisor = Advisor(clock=clock)
    for _ in range(5):
        advisor.observe_response(200.0, 40.0)
    advisor.observe_response(1000.0, 15.0)
    advisor.tick(Sample(ram_percent=40))
    assert "ttft" not in advisor.signals  # one slow answer (it may have waited in the server's queue) is not enough
    for _ in range(2):
        advisor.observe_response(1000.0, 15.0)
    advisor.tick(Sample(ram_percent=40))
    assert advisor.signals["ttft"][0] == "action" and advisor.signals["throughput"][0] == "action"
    assert advisor.state == "ACTION_NEEDED"


def test_speed_under_more_concurrency_is_compared_with_its_own_baseline() -> None:
    """A batching server at 8 requests gives each a quarter of the tokens/s and a longer TTFT: that is the
    load, not a collapse, and must not make the advisor halve the concurrency (it cost a quarter of
    llama-server's throughput). A slowdown at the same load is still an action."""
    clock = Clock()
    advisor = Advisor(clock=clock)
    for _ in range(10):
        advisor.observe_response(150.0, 60.0, concurrency=1)
    for _ in range(10):
        advisor.observe_response(600.0, 15.0, concurrency=8)
        advisor.tick(Sample(ram_percent=40))
        assert "throughput" not in advisor.signals or advisor.signals["throughput"][0] == "ok"
        assert "ttft" not in advisor.signals or advisor.signals["ttft"][0] == "ok"
        clock.now += 1
    assert advisor.state == "OPTIMAL" and not advisor.applied
    for _ in range(3):
        advisor.observe_response(2000.0, 4.0, concurrency=7)  # same level (5-8), now really slower
    advisor.tick(Sample(ram_percent=40))
    assert advisor.signals["ttft"][0] == "action" and advisor.signals["throughput"][0] == "action"
    for _ in range(5):
        advisor.observe_response(150.0, 60.0, concurrency=1)  # one at a time: its own baseline, unchanged
    assert advisor.ttft_ratio == pytest.approx(1.0) and advisor.tps_ratio == pytest.approx(1.0)


async def test_the_plugin_reports_the_servers_concurrency_with_each_answer() -> None:
    host, plugin, _clock, _sampler = make()
    seen: list[int | None] = []
    host.serve_concurrency(lambda: 6, lambda: 3)
    await plugin.tick_once()
    assert plugin.advisor is not None
    original = plugin.advisor.observe_response

    def spy(*args: Any, **kwargs: Any) -> None:
        seen.append(kwargs.get("concurrency"))
        original(*args, **kwargs)

    plugin.advisor.observe_response = spy  # type: ignore[method-assign]
    pipeline = Pipeline(host)
    request = ChatRequest(model="llama3.2:1b", messages=[Message(role="user", content="hi")])
    await pipeline.run(await pipeline.plan(request, host.backend("fake"), LLAMA_1B))
    assert seen == [4]  # the three others running, plus this one
    assert host.requests_in_flight == 3
    assert PluginHost(load_entrypoints=False).requests_in_flight is None  # outside a server: unknown


async def test_ceiling_and_kv_are_applied_in_the_folds_never_below_the_prompt() -> None:
    host, plugin, clock, sampler = make()
    sampler.next = Sample(ram_percent=91.0)
    for _ in range(3):
        await plugin.tick_once()
        clock.now += 21
    pipeline = Pipeline(host)
    small = ChatRequest(model="llama3.2:1b", messages=[Message(role="user", content="hi")])
    plan = (await pipeline.plan(small, host.backend("fake"), LLAMA_1B)).plan
    assert plan.num_ctx == 4096 and plan.steps("num_ctx")[-1].plugin == "session-advisor"
    assert any(e.plugin == "session-advisor" and e.new == "q8_0" for e in plan.steps("kv_type"))
    big = ChatRequest(model="llama3.2:1b", max_tokens=512, messages=[Message(role="user", content="word " * 5000)])
    plan = (await pipeline.plan(big, host.backend("fake"), LLAMA_1B)).plan
    assert plan.prompt_tokens is not None and plan.num_ctx == plan.prompt_tokens + 512 > 4096


async def test_sampler_task_starts_and_stops_with_the_host() -> None:
    host, plugin, _, _ = make({"interval": 0.05})
    await host.start()
    await asyncio.sleep(0.12)
    assert plugin._task is not None and len(plugin.advisor.samples) >= 2  # type: ignore[union-attr]
    await host.stop()
    assert plugin._task is None


def test_thermal_and_pmset_readers(tmp_path: Path) -> None:
    for zone, temp in enumerate([45000, 91500]):
        (tmp_path / f"thermal_zone{zone}").mkdir()
        (tmp_path / f"thermal_zone{zone}" / "temp").write_text(f"{temp}\n")
    assert linux_thermal(tmp_path) == "throttling"
    assert linux_thermal(tmp_path / "missing") == "normal"
    assert parse_pmset("Note: No thermal warning level has been recorded\nCPU_Speed_Limit = 100") == "normal"
    assert parse_pmset("CPU_Speed_Limit = 70") == "throttling"
    linux = SystemSampler(thermal_root=tmp_path, gpu=lambda: 55.0, platform="linux")
    sample = linux.sample()
    assert sample.thermal == "throttling" and sample.gpu_memory_percent == 55.0 and 0 < sample.ram_percent < 100
    mac = SystemSampler(pmset=lambda: "CPU_Speed_Limit = 40", gpu=lambda: None, platform="darwin")
    assert mac.sample().thermal == "critical"


def test_status_cli_falls_back_to_a_local_sample() -> None:
    from autotune_core.cli import common

    host, plugin, _, sampler = make()
    sampler.next = Sample(ram_percent=85.0, swap_used_bytes=int(0.2 * GB))
    host.config.server.port = 1  # nothing listens there
    common._host = host
    try:
        from autotune_plugins.session_advisor.cli import status_command

        out = CliRunner().invoke(status_command(plugin), [])
    finally:
        common.reset_host()
    assert out.exit_code == 0, out.output
    assert "no server answered" in out.output and "state WARNING" in out.output and "RAM 85 %" in out.output


@pytest.mark.parametrize("how", ["env", "settings"])
async def test_toggle(how: str, autotune_host_factory: Any) -> None:
    if how == "env":
        host = autotune_host_factory(
            Proposer(), load_entrypoints=True, env={"AUTOTUNE_DISABLE_PLUGINS": "session-advisor"}
        )
        assert not host.enabled("session-advisor") and host.plugin("session-advisor") is None
    else:
        host, plugin, clock, sampler = make({"act": False})
        sampler.next = Sample(ram_percent=91.0)
        for _ in range(3):
            await plugin.tick_once()
            clock.now += 21
    plan = (
        await Pipeline(host).plan(
            ChatRequest(model="llama3.2:1b", messages=[Message(role="user", content="hi")]),
            host.backend("fake"),
            LLAMA_1B,
        )
    ).plan
    if how == "settings":
        assert plan.num_ctx == 8192 and next(e.new for e in plan.steps("kv_type")) == "f16"
    assert not any(e.plugin == "session-advisor" for e in plan.trace)
    on = autotune_host_factory(load_entrypoints=True, env={"AUTOTUNE_LOAD_PLUGINS": "session-advisor"})
    assert on.enabled("session-advisor")


def test_cli_registration_never_replaces_a_core_status_command() -> None:
    import click

    @click.group()
    def cli() -> None: ...

    _, plugin, _, _ = make()
    plugin.register_commands(cli)
    assert "status" in cli.commands
    core_status = click.Command("status")
    fresh = click.Group("autotune", commands={"status": core_status})
    plugin.register_commands(fresh)
    assert fresh.commands["status"] is core_status and "advisor" in fresh.commands
