"""kv-precision and live-pressure."""

from __future__ import annotations

import asyncio

import pytest
from opt_support import chat, context, make_host, plan, pressure, set_scope, steps

from autotune_core.backend import KnobScope
from autotune_core.errors import ConfigError
from autotune_plugins.ctx_buckets import CtxBucketsPlugin
from autotune_plugins.ctx_sizing import CtxSizingPlugin
from autotune_plugins.live_pressure import LivePressurePlugin

# -- kv-precision ----------------------------------------------------------------------------------


def test_kv_by_profile_is_advice_on_server_env_backends() -> None:
    for profile, kv in (("fast", "q8_0"), ("balanced", "f16"), ("quality", "f16")):
        p = plan(make_host("kv-precision", profile=profile), chat())
        step = p.steps("kv_type")[0]
        assert step.plugin == "kv-precision" and step.new == kv
        assert "advice only" in step.reason and "FAKE_KV_CACHE_TYPE" in step.reason
        assert p.kv_type is None and p.applied["kv_type"] == "server_env"  # never sent
        assert any("FAKE_KV_CACHE_TYPE" in a for a in p.advice)


def test_kv_applied_at_load_where_the_backend_takes_it() -> None:
    host = make_host("kv-precision", profile="fast")
    set_scope(host, "kv_type", KnobScope.AT_LOAD)
    p = plan(host, chat())
    assert p.kv_type == "q8_0" and p.applied["kv_type"] == "at_load"
    assert "applied at model load" in steps(p, "kv-precision")[0]


def test_kv_settings_override_and_validation() -> None:
    host = make_host("kv-precision", settings={"kv-precision": {"override": "Q4_0"}})
    set_scope(host, "kv_type", KnobScope.AT_LOAD)
    assert plan(host, chat()).kv_type == "q4_0"
    with pytest.raises(ConfigError, match="kv-precision"):
        make_host("kv-precision", settings={"kv-precision": {"by_profile": {"fast": "q9"}}})


def test_kv_client_choice_honoured() -> None:
    host = make_host("kv-precision")
    set_scope(host, "kv_type", KnobScope.AT_LOAD)
    assert plan(host, chat(options={"kv_type": "q8_0"})).kv_type == "q8_0"


# -- live-pressure ---------------------------------------------------------------------------------


def pressured(tier: str, ram: float) -> tuple[object, object]:
    host = make_host("ctx-sizing", "ctx-buckets", "kv-precision", "live-pressure")
    set_scope(host, "kv_type", KnobScope.AT_LOAD)
    host.pressure = pressure(tier, ram, timestamp=1.0)
    return host, plan(host, chat("hi", max_tokens=3700))  # sizing → 3970 → bucket 4096


def test_tiers_applied_after_snapping_and_snapped_down() -> None:
    expected = {"normal": (4096, "f16"), "moderate": (3072, "f16"), "high": (3072, "q8_0"), "critical": (2048, "q8_0")}
    for tier, ram in (("normal", 50), ("moderate", 81), ("high", 89), ("critical", 95)):
        _, p = pressured(tier, ram)
        assert (p.num_ctx, p.kv_type) == expected[tier], tier
        if tier != "normal":
            assert p.num_ctx in (512, 768, 1024, 1536, 2048, 3072, 4096)  # a bucket: reductions survive
            assert "pressure" in steps(p, "live-pressure", "num_ctx")[0]


def test_tier_from_percent_even_if_sampler_says_normal_and_swap_raises_it() -> None:
    plugin = LivePressurePlugin()
    host = make_host(plugins=[plugin])
    settings = host.plugin_settings("live-pressure")
    ctx = context(host, pressure=pressure("normal", 89.0))
    assert plugin.tier_of(ctx, settings)[0] == "high"  # type: ignore[arg-type]
    ctx = context(host, pressure=pressure("normal", 50.0, swap_growth_bytes_per_s=64 * 2**20))
    tier, why = plugin.tier_of(ctx, settings)  # type: ignore[arg-type]
    assert tier == "moderate" and "swapping" in why


def test_on_pressure_keeps_the_latest_report() -> None:
    plugin = LivePressurePlugin()
    host = make_host(plugins=[CtxSizingPlugin(), CtxBucketsPlugin(), plugin])
    asyncio.run(host.acall("on_pressure", ctx=context(host), pressure=pressure("critical", 96, timestamp=5.0)))
    assert plugin.latest.tier == "critical"
    p = plan(host, chat("hi", max_tokens=3700))  # host.pressure unset: the plugin's own report is used
    assert p.num_ctx == 2048
    assert p.flags["output_capped"] == {"requested": 3700, "room": 2048 - (p.prompt_tokens or 0)}


def test_never_below_the_prompt_plus_reserve() -> None:
    host = make_host("ctx-sizing", "ctx-buckets", "live-pressure")
    host.pressure = pressure("critical", 97, timestamp=1.0)
    prompt = "alpha beta gamma delta " * 330  # ~1330 tokens
    p = plan(host, chat(prompt, max_tokens=1000))
    assert p.prompt_tokens is not None and p.num_ctx is not None
    assert p.num_ctx >= p.prompt_tokens + 256
    assert "would cut the prompt" in steps(p, "live-pressure", "num_ctx")[0]


def test_pressure_settings_validated() -> None:
    with pytest.raises(ConfigError):
        make_host("live-pressure", settings={"live-pressure": {"high_percent": 70}})
    with pytest.raises(ConfigError):
        make_host("live-pressure", settings={"live-pressure": {"factors": {"high": 1.5}}})
