"""Every optimization is on by default, can be switched off (config or env), and folds in a fixed order."""

from __future__ import annotations

from typing import Any

import pytest
from opt_support import OPTIMIZATIONS, chat, make_host, plan, pressure, set_scope

from autotune_core.backend import KnobScope
from autotune_core.config import PluginsConfig, Settings
from autotune_core.testing import make_hardware

MINE = sorted(OPTIMIZATIONS)


def test_all_ten_load_from_entry_points_by_default(autotune_host_factory: Any) -> None:
    host = autotune_host_factory(load_entrypoints=True)
    for name in MINE:
        assert host.enabled(name), (name, host.records[name].reason)
        assert host.records[name].source == "builtin"
        assert type(host.plugin(name)) is OPTIMIZATIONS[name]


def test_fold_order() -> None:
    host = make_host()
    assert host.hook_order("choose_num_ctx") == ["ctx-sizing", "ctx-buckets", "live-pressure", "noswap-guard"]
    assert host.hook_order("choose_kv_type") == [
        "kv-precision",
        "live-pressure",
        "noswap-guard",
        "flash-attention",
        "prefix-protect",
    ]
    assert host.hook_order("pre_request")[-1] == "prefix-protect"  # after compression changed the messages
    stages = {name: host.records[name].fold_positions for name in MINE}
    assert stages["ctx-sizing"]["choose_num_ctx"].startswith("propose")
    assert stages["ctx-buckets"]["choose_num_ctx"].startswith("snap")
    assert stages["live-pressure"]["choose_num_ctx"].startswith("adjust")
    assert stages["noswap-guard"]["choose_num_ctx"].startswith("guard")


def test_fold_order_with_entry_points_keeps_our_relative_order(autotune_host_factory: Any) -> None:
    host = autotune_host_factory(load_entrypoints=True)
    order = [name for name in host.hook_order("choose_num_ctx") if name in OPTIMIZATIONS]
    assert order == ["ctx-sizing", "ctx-buckets", "live-pressure", "noswap-guard"]
    assert host.hook_order("choose_num_ctx")[-1] == "noswap-guard"  # the guard has the last word


#: per plugin: (profile, how to provoke it, its effect on a plan)
def _effect(name: str, p: object) -> bool:
    trace = [e for e in p.trace if e.plugin == name]  # type: ignore[attr-defined]
    return bool(trace)


@pytest.mark.parametrize("name", MINE)
@pytest.mark.parametrize("via", ["config", "env"])
def test_disabled_plugin_is_absent_and_its_effect_gone(name: str, via: str, autotune_host_factory: Any) -> None:
    disabled = [name] if via == "config" else []
    env = {"AUTOTUNE_DISABLE_PLUGINS": name} if via == "env" else {}
    config = Settings(backend="fake", plugins=PluginsConfig(disabled=disabled))
    hw = make_hardware(ram_gib=64, available_gib=6.6)  # tight enough that the guard and model-fit speak
    on = autotune_host_factory(load_entrypoints=True, hardware=hw)
    off = autotune_host_factory(load_entrypoints=True, config=config, env=env, hardware=hw)
    assert off.plugin(name) is None and off.records[name].status == "disabled"
    assert "disabled by" in off.records[name].reason
    for host in (on, off):
        set_scope(host, "kv_type", KnobScope.AT_LOAD)
        host.pressure = pressure("high", 90)
    request = chat("hello " * 50, system="Be brief. " * 30, max_tokens=20000)
    from autotune_core.testing import LLAMA_1B

    big = LLAMA_1B.model_copy(update={"name": "big", "size_bytes": int(4.9 * 2**30)})
    p_on, p_off = plan(on, request, info=big), plan(off, request, info=big)
    assert _effect(name, p_on), f"{name} should act on this request"
    assert not _effect(name, p_off)


def test_disable_everything_leaves_a_plain_request(autotune_host_factory: Any) -> None:
    host = autotune_host_factory(
        load_entrypoints=True, config=Settings(backend="fake", plugins=PluginsConfig(disabled=MINE)), env={}
    )
    assert not any(host.enabled(name) for name in MINE)
    p = plan(host, chat("hi", system="Be brief."))
    assert not [e for e in p.trace if e.plugin in MINE]
    bare = autotune_host_factory(
        load_entrypoints=True, config=Settings(backend="fake"), env={"AUTOTUNE_LOAD_PLUGINS": ""}
    )
    p = plan(bare, chat("hi", system="Be brief."))
    assert (p.num_ctx, p.kv_type, p.num_keep, p.num_batch, p.keep_alive, p.flash_attn) == (None,) * 6
