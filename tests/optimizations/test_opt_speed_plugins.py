"""prefix-protect, keep-alive, flash-attention, prefill-batch."""

from __future__ import annotations

import asyncio
import logging

import pytest
from opt_support import chat, context, make_host, plan, pressure, result, run, set_scope, steps

from autotune_core.backend import KnobScope
from autotune_core.errors import ConfigError
from autotune_core.hardware import GpuInfo
from autotune_core.plan import Plan
from autotune_core.testing import LLAMA_1B
from autotune_plugins.keep_alive import parse_duration
from autotune_plugins.prefill_batch import PrefillBatchPlugin
from autotune_plugins.prefix_protect import PrefixProtectPlugin

SYSTEM = "You are a meticulous assistant who answers in short sentences. " * 12

# -- prefix-protect --------------------------------------------------------------------------------


def test_num_keep_is_the_system_prompt_where_per_request() -> None:
    p = plan(make_host("ctx-sizing", "prefix-protect"), chat("hi", system=SYSTEM))
    assert p.num_keep is not None and 100 < p.num_keep < p.prompt_tokens  # type: ignore[operator]
    assert p.applied["num_keep"] == "per_request"
    assert plan(make_host("prefix-protect"), chat("hi")).num_keep is None  # no system prompt: nothing


def test_num_keep_not_sent_where_unsupported() -> None:
    host = make_host("prefix-protect")
    set_scope(host, "num_keep", KnobScope.UNSUPPORTED)
    p = plan(host, chat("hi", system=SYSTEM))
    assert p.num_keep is None and "truncation check" in steps(p, "prefix-protect")[0]


def test_num_keep_recapped_after_the_final_num_ctx() -> None:
    host = make_host("ctx-sizing", "prefix-protect", settings={"prefix-protect": {"keep_reserve": 450}})
    p = plan(host, chat("hi", system=SYSTEM, max_tokens=10))  # num_ctx 512 → cap 62
    assert p.num_ctx == 512 and p.num_keep == 62
    assert "re-capped" in steps(p, "prefix-protect", "num_keep")[-1]


def post(
    plugin: PrefixProtectPlugin,
    host: object,
    p: Plan,
    reported: int,
    cached: int | None = None,
    prefix_cache: bool = True,
) -> None:
    ctx = context(host)  # type: ignore[arg-type]
    ctx.capabilities = ctx.capabilities.model_copy(update={"prefix_cache": prefix_cache})
    request = chat("x")
    plugin.pre_request(ctx, request, p)
    asyncio.run(
        host.acall(
            "post_response",
            ctx=ctx,
            request=request,
            plan=p,  # type: ignore[attr-defined]
            result=result(reported, cached),
        )
    )


def test_truncation_flagged_with_counter_and_warning(caplog: pytest.LogCaptureFixture) -> None:
    plugin = PrefixProtectPlugin()
    host = make_host(plugins=[plugin])
    exact = Plan(model="m", prompt_tokens=1000, prompt_tokens_exact=True, num_ctx=2048)
    with caplog.at_level(logging.WARNING, logger="autotune.prefix-protect"):
        post(plugin, host, exact, 700, cached=0)
    assert exact.flags["truncated"]["expected"] == 1000 and plugin.truncations == 1
    assert "truncation" in caplog.text and any("truncated" in a for a in exact.advice)


def test_tolerates_estimates_and_cached_prefixes() -> None:
    plugin = PrefixProtectPlugin()
    host = make_host(plugins=[plugin])
    estimate = Plan(model="m", prompt_tokens=1000, prompt_tokens_exact=False)
    post(plugin, host, estimate, 820)  # within the 25 % margin of an estimate
    assert "truncated" not in estimate.flags
    cached = Plan(model="m", prompt_tokens=1000, prompt_tokens_exact=True)
    post(plugin, host, cached, 100, cached=900)  # the count excluded 900 cached tokens
    assert "truncated" not in cached.flags
    assert plugin.truncations == 0
    estimate_cut = Plan(model="m", prompt_tokens=1000, prompt_tokens_exact=False)
    post(plugin, host, estimate_cut, 500, prefix_cache=False)
    assert estimate_cut.flags["truncated"]["reported"] == 500 and plugin.truncations == 1


def test_old_ollama_counts_without_cached_prefix_not_flagged() -> None:
    """No cached_tokens reported (Ollama < 0.30.1): only the new suffix is counted on the next turn."""
    plugin = PrefixProtectPlugin()
    host = make_host(plugins=[plugin])
    answer = "Llamas are camelids from South America. " * 8
    first = chat("Tell me about llamas please", system=SYSTEM * 4)
    second = chat("And alpacas?", system=SYSTEM * 4, history=[("Tell me about llamas please", answer)])
    p1, p2 = plan(host, first), plan(host, second)
    post(plugin, host, p1, p1.prompt_tokens or 0)
    suffix = (p2.prompt_tokens or 0) - (p1.prompt_tokens or 0) + 10  # what an old Ollama reports
    assert suffix < 0.5 * (p2.prompt_tokens or 0)
    ctx = context(host)
    plugin.pre_request(ctx, second, p2)
    asyncio.run(host.acall("post_response", ctx=ctx, request=second, plan=p2, result=result(suffix)))
    assert "truncated" not in p2.flags and plugin.truncations == 0
    # the same short count on an unrelated prompt (nothing shared) is a truncation
    p3 = plan(host, chat("Something else entirely " * 40, system="Different system prompt. " * 20))
    post(plugin, host, p3, 20)
    assert p3.flags["truncated"]["reported"] == 20 and plugin.truncations == 1


def test_check_fit_caps_output_not_prompt() -> None:
    host = make_host("ctx-sizing", profile="fast")
    p = plan(host, chat("hi", max_tokens=5000))
    assert p.num_ctx == 2048 and p.max_tokens == 2048 - p.prompt_tokens  # type: ignore[operator]
    assert p.flags["output_capped"]["requested"] == 5000


# -- keep-alive ------------------------------------------------------------------------------------


def test_parse_duration() -> None:
    assert parse_duration("30m") == 1800 and parse_duration("1h30m") == 5400 and parse_duration("500ms") == 0.5
    assert parse_duration(-1) == -1 and parse_duration("-1m") == -1 and parse_duration("forever") == -1
    assert parse_duration("3600") == 3600 and parse_duration(0) == 0
    for bad in ("10 minutes", "5x", "", "m"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_keep_alive_default_forever_and_configurable() -> None:
    assert plan(make_host("keep-alive"), chat()).keep_alive == -1
    assert plan(make_host("keep-alive", settings={"keep-alive": {"value": "30m"}}), chat()).keep_alive == 1800
    with pytest.raises(ConfigError, match=r"keep-alive\.value"):
        make_host("keep-alive", settings={"keep-alive": {"value": "ten minutes"}})


def test_client_keep_alive_wins_including_unload() -> None:
    host = make_host("keep-alive")
    p = plan(host, chat(keep_alive=0))
    assert p.keep_alive == 0 and "client's choice wins" in steps(p, "keep-alive")[0]
    assert plan(host, chat(keep_alive="5m")).keep_alive == 300


def test_keep_alive_unsupported_backend() -> None:
    host = make_host("keep-alive")
    set_scope(host, "keep_alive", KnobScope.UNSUPPORTED)
    p = plan(host, chat())
    assert p.keep_alive is None and "nothing to do" in steps(p, "keep-alive")[0]


# -- flash-attention -------------------------------------------------------------------------------


def test_flash_attention_is_advice_on_server_env() -> None:
    p = plan(make_host("flash-attention"), chat())
    assert p.flash_attn is None and "flash_attn" not in p.applied
    assert any("FAKE_FLASH_ATTENTION=1" in a for a in p.advice)
    assert "advice only" in steps(p, "flash-attention")[0]


def test_flash_attention_at_load_and_required_for_quantized_v() -> None:
    host = make_host("flash-attention", "kv-precision", profile="fast", settings={"flash-attention": {"enable": True}})
    set_scope(host, "flash_attn", KnobScope.AT_LOAD)
    set_scope(host, "kv_type", KnobScope.AT_LOAD)
    assert plan(host, chat()).flash_attn is True
    off = make_host("flash-attention", "kv-precision", profile="fast", settings={"flash-attention": {"enable": False}})
    set_scope(off, "flash_attn", KnobScope.AT_LOAD)
    set_scope(off, "kv_type", KnobScope.AT_LOAD)
    p = plan(off, chat())
    assert p.kv_type == "q8_0" and p.flash_attn is True and "required" in steps(p, "flash-attention")[0]
    balanced = make_host("flash-attention", "kv-precision", settings={"flash-attention": {"enable": False}})
    set_scope(balanced, "flash_attn", KnobScope.AT_LOAD)
    set_scope(balanced, "kv_type", KnobScope.AT_LOAD)
    assert plan(balanced, chat()).flash_attn is None  # f16 KV: not required, user said off


def test_flash_attention_auto_asks_only_where_a_gpu_runs_it() -> None:
    cpu = make_host("flash-attention")
    set_scope(cpu, "flash_attn", KnobScope.AT_LOAD)
    p = plan(cpu, chat())
    assert p.flash_attn is None and "CPU-only" in steps(p, "flash-attention")[0]
    gpu = make_host("flash-attention")
    set_scope(gpu, "flash_attn", KnobScope.AT_LOAD)
    gpu.hardware = gpu.hardware.model_copy(
        update={"gpus": [GpuInfo(vendor="nvidia", name="RTX 4090", memory_total_bytes=24 * 2**30)]}
    )
    assert plan(gpu, chat()).flash_attn is True


# -- prefill-batch ---------------------------------------------------------------------------------


def test_num_batch_fixed_per_model_even_when_pressure_changes() -> None:
    plugin = PrefillBatchPlugin()
    host = make_host(plugins=[plugin])
    first, _ = run(host, chat())
    assert first.num_batch == 1024
    host.pressure = pressure("critical", 96)
    later, _ = run(host, chat())
    assert later.num_batch == 1024 and "fixed" in steps(later, "prefill-batch")[0]


def test_num_batch_low_only_when_loading_under_critical_pressure() -> None:
    plugin = PrefillBatchPlugin()
    host = make_host(plugins=[plugin])
    host.pressure = pressure("critical", 96)
    first, _ = run(host, chat())
    assert first.num_batch == 256
    host.pressure = pressure("normal", 40)
    assert run(host, chat())[0].num_batch == 256  # remembered: a change would reload
    assert plugin.chosen("fake", "llama3.2:1b") == 256
    backend = host.backend("fake")
    assert backend.reloads == 0  # type: ignore[attr-defined]


def test_num_batch_untouched_where_not_settable_and_configurable_per_model() -> None:
    host = make_host("prefill-batch")
    set_scope(host, "num_batch", KnobScope.SERVER_ENV)
    assert plan(host, chat()).num_batch is None
    tuned = make_host("prefill-batch", settings={"prefill-batch": {"models": {"llama3.2:1b": 512}}})
    assert plan(tuned, chat()).num_batch == 512
    assert LLAMA_1B.name == "llama3.2:1b"
