"""The fallback chain and its application at plan time: every value in the trace with its origin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from archetype_helpers import SetsPlugin, profile_set, replay

from autotune_core.archetypes import classify, load_profile_set, resolve
from autotune_core.config import Settings
from autotune_core.context import Choice, fold_stage
from autotune_core.hardware import CpuInfo, GiB, GpuInfo, HardwareSnapshot
from autotune_core.markers import hookimpl
from autotune_core.pytest_plugin import plan_request
from autotune_core.testing import make_hardware
from autotune_plugins.archetypes.apply import AutoTunePlugin
from autotune_plugins.archetypes.bundled import BundledProfilesPlugin

RTX4090 = HardwareSnapshot(
    os="linux",
    cpu=CpuInfo(arch="x86_64"),
    ram_total_bytes=64 * GiB,
    ram_available_bytes=48 * GiB,
    gpus=[
        GpuInfo(vendor="nvidia", name="NVIDIA GeForce RTX 4090", memory_total_bytes=24 * GiB, compute_capability="8.9")
    ],
)

BASE = profile_set(
    "base",
    {
        "nvidia-ada-24gb": {
            "common": {
                "num_batch": {"value": 1024, "source": "exact default"},
                "num_ctx": {"value": 8192, "source": "exact ctx"},
            },
            "overlays": [{"model": "llama3.2*", "common": {"num_batch": {"value": 256, "source": "llama overlay"}}}],
        },
        "nvidia-generic": {
            "matches": ["nvidia-*-24gb"],
            "common": {
                "num_batch": {"value": 4096, "source": "glob default"},
                "kv_type": {"value": "q8_0", "source": "glob kv"},
            },
        },
    },
    version=3,
)


def _sets(*items: dict) -> list:
    return [(f"p{i}", load_profile_set(item, origin="t")) for i, item in enumerate(items)]


def test_chain_overlay_then_exact_then_glob_then_nothing() -> None:
    archetype = classify(RTX4090)
    with_overlay = resolve(_sets(BASE), archetype, section=None, model="llama3.2:1b")
    assert with_overlay["num_batch"].value == 256 and with_overlay["num_batch"].origin.overlay == "llama3.2*"
    assert [v for v, _o in with_overlay["num_batch"].shadowed] == [1024, 4096]
    other_model = resolve(_sets(BASE), archetype, section=None, model="qwen3:8b")
    assert other_model["num_batch"].value == 1024 and other_model["num_batch"].origin.profile == "nvidia-ada-24gb"
    assert other_model["kv_type"].value == "q8_0" and other_model["kv_type"].origin.profile == "nvidia-generic"
    assert "flash_attn" not in other_model  # no profile says: the backend decides
    assert resolve(_sets(BASE), classify(make_hardware(16)), section=None) == {}


def test_backend_section_beats_common_and_bandwidth_key_beats_plain_id() -> None:
    tiered = profile_set(
        "tiered",
        {
            "nvidia-ada-24gb-bw-high": {"common": {"num_batch": {"value": 2048, "source": "tier"}}},
            "nvidia-ada-24gb": {"embedded": {"n_batch": {"value": 512, "source": "embedded section"}}},
        },
    )
    resolved = resolve(_sets(tiered), classify(RTX4090), section="embedded")
    assert resolved["num_batch"].value == 2048  # the more specific archetype key wins
    common_only = resolve(
        _sets(profile_set("s", {"nvidia-ada-24gb": {"common": {"num_batch": 128}, "embedded": {"n_batch": 512}}})),
        classify(RTX4090),
        section="embedded",
    )
    assert common_only["num_batch"].value == 512 and common_only["num_batch"].origin.section == "embedded"


def test_higher_priority_set_wins_per_knob_and_the_loser_is_recorded() -> None:
    third_party = profile_set(
        "vendor-tuned", {"nvidia-ada-24gb": {"common": {"num_batch": 1536}}}, priority=50, source="vendor lab"
    )
    resolved = resolve(_sets(BASE, third_party), classify(RTX4090), section=None)
    winner = resolved["num_batch"]
    assert (winner.value, winner.origin.set_name, winner.origin.source) == (1536, "vendor-tuned", "vendor lab")
    assert (1024, "base") in [(v, o.set_name) for v, o in winner.shadowed]
    assert resolved["num_ctx"].origin.set_name == "base"  # per knob, not per profile


def test_plan_trace_shows_every_applied_value_with_its_origin(autotune_host_factory: Any) -> None:
    host = autotune_host_factory(SetsPlugin("sets", BASE), AutoTunePlugin(), hardware=RTX4090)
    plan = plan_request(host, "hello", model="llama3.2:1b")
    mine = {e.knob: e for e in plan.trace if e.plugin == "auto-tune"}
    assert mine["num_batch"].new == 256
    assert mine["num_batch"].reason == (
        "archetype nvidia-ada-24gb (base v3, model overlay 'llama3.2*', common, source: llama overlay)"
    )
    assert mine["num_ctx"].new == 8192 and "exact ctx" in mine["num_ctx"].reason
    assert mine["kv_type"].new == "q8_0" and "via profile nvidia-generic" in mine["kv_type"].reason
    assert plan.num_batch == 256 and plan.num_ctx == 8192
    assert plan.flags["archetype"]["id"] == "nvidia-ada-24gb"


@pytest.mark.parametrize("how", ["config", "env"])
def test_disabling_auto_tune_removes_every_archetype_entry(how: str, autotune_host_factory: Any) -> None:
    """Through the real entry points, as a user switches it off."""
    from autotune_core.host import PluginHost

    def build(disabled: bool) -> PluginHost:
        env = {"AUTOTUNE_LOAD_PLUGINS": "archetype-profiles,auto-tune"}
        config = Settings(backend="fake")
        if disabled and how == "config":
            config = Settings(backend="fake", plugins={"disabled": ["auto-tune"]})
        if disabled and how == "env":
            env["AUTOTUNE_DISABLE_PLUGINS"] = "auto-tune"
        return autotune_host_factory(load_entrypoints=True, config=config, hardware=RTX4090, env=env)

    on = plan_request(build(False), "hello", model="llama3.2:1b")
    assert [e for e in on.trace if e.plugin == "auto-tune"]
    off_host = build(True)
    off = plan_request(off_host, "hello", model="llama3.2:1b")
    assert off_host.records["auto-tune"].status == "disabled"
    assert off_host.archetype_sets  # profiles are still registered (autotune hardware shows them) ...
    assert not [e for e in off.trace if e.plugin == "auto-tune" or "archetype" in e.reason]  # ... not applied
    assert off.num_ctx is None and "archetype" not in off.flags


def test_explicit_client_options_are_never_overridden(autotune_host_factory: Any) -> None:
    host = autotune_host_factory(SetsPlugin("sets", BASE), AutoTunePlugin(), hardware=RTX4090)
    plan = plan_request(host, "hello", model="llama3.2:1b", options={"num_batch": 64, "num_ctx": 2048})
    assert not [e for e in plan.trace if e.plugin == "auto-tune" and e.knob in ("num_batch", "num_ctx")]


class _BigCtx:
    """A stand-in for ctx-sizing: proposes a large context after the archetype's default."""

    name = "big-ctx"

    @hookimpl
    @fold_stage("propose")
    def choose_num_ctx(self, ctx, request, plan, proposal):  # type: ignore[no-untyped-def]
        return Choice(65536, "sized from the prompt")


def test_num_ctx_default_is_refined_by_later_proposers_and_capped_by_the_ceiling(autotune_host_factory: Any) -> None:
    capped = profile_set("cap", {"nvidia-ada-24gb": {"common": {"num_ctx": 8192, "max_num_ctx": 16384}}})
    host = autotune_host_factory(SetsPlugin("sets", capped), AutoTunePlugin(), _BigCtx(), hardware=RTX4090)
    plan = plan_request(host, "hello", model="llama3.2:1b")
    steps = [(e.plugin, e.new) for e in plan.steps("num_ctx")]
    assert steps == [("auto-tune", 8192), ("big-ctx", 65536), ("auto-tune", 16384)]
    assert plan.num_ctx == 16384 and plan.steps("num_ctx")[-1].reason.startswith("ceiling: archetype")


def test_bundled_profiles_apply_on_recorded_machines(tmp_path: Path, autotune_host_factory: Any) -> None:
    snapshot = replay(tmp_path, nvidia="rtx4090.csv")
    host = autotune_host_factory(BundledProfilesPlugin(), AutoTunePlugin(), hardware=snapshot)
    plan = plan_request(host, "hello", model="llama3.2:1b")
    ctx = plan.steps("num_ctx")[0]
    assert (ctx.plugin, ctx.new) == ("auto-tune", 32768)
    assert "bundled v1" in ctx.reason and "docs/backend-facts.md#ollama-default-context" in ctx.reason


@pytest.mark.parametrize("snapshot_args", [{"root": "strix_halo_128gb"}, {"sysctl": "m2_pro_16gb"}])
def test_bundled_profiles_reach_the_embedded_section(
    tmp_path: Path, snapshot_args: dict, autotune_host_factory: Any
) -> None:
    from autotune_core.archetypes import profile_sets

    host = autotune_host_factory(BundledProfilesPlugin(), hardware=replay(tmp_path, **snapshot_args))
    sets, errors = profile_sets(host.archetype_sets)
    resolved = resolve(sets, classify(host.hardware), section="embedded")
    assert not errors and resolved["embedded.n_gpu_layers"].value == -1


def test_a_broken_registered_set_is_reported_not_fatal(autotune_host_factory: Any) -> None:
    broken = profile_set("broken", {"nvidia-ada-24gb": {"common": {"num_batch": -5}}})
    host = autotune_host_factory(SetsPlugin("sets", broken, BASE), AutoTunePlugin(), hardware=RTX4090)
    plan = plan_request(host, "hello", model="gemma3:270m")
    assert plan.num_batch == 1024  # the valid set still applies
