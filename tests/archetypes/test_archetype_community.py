"""The community loop: bench (fake backend; the embedded model when present), merge, learn."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import time
from pathlib import Path
from typing import Any

import pytest

from autotune_core.archetypes import classify, profile_sets, resolve
from autotune_core.pytest_plugin import plan_request
from autotune_core.testing import FakeBackend, make_hardware
from autotune_plugins.archetypes.apply import AutoTunePlugin
from autotune_plugins.archetypes.bench import default_sweep, run_bench
from autotune_plugins.archetypes.bundled import BundledProfilesPlugin, sets_to_register
from autotune_plugins.archetypes.cache import ProfileCache
from autotune_plugins.archetypes.learn import learn
from autotune_plugins.archetypes.merge import load_contributions, mad_outliers, merge
from autotune_plugins.archetypes.submission import Contribution, HardwareSummary, RunResult

HW = HardwareSummary(os="linux", cpu="Test CPU", cpu_arch="x86_64", ram_gb=16.0)


def contribution(
    speeds: dict[int, float],
    *,
    archetype: str = "cpu-x86-16gb",
    backend: str = "fake",
    seed: int = 0,
    section: str | None = None,
) -> Contribution:
    runs = [
        RunResult(
            params={"num_batch": batch, "flash_attn": None, "kv_type": None},
            ttft_ms=50.0 + seed,
            tokens_per_s=tps,
            completion_tokens=8,
        )
        for batch, tps in speeds.items()
    ]
    return Contribution(
        archetype=archetype,
        hardware=HW,
        backend=backend,
        section=section,
        model="llama3.2:1b",
        runs=runs,
        autotune_version="0.1.0",
        timestamp=f"2026-08-25T10:00:{seed:02d}+00:00",
    ).with_id()


def test_default_sweep_skips_quantized_v_without_flash_attention() -> None:
    sweep = default_sweep()
    assert len(sweep) == 9 and {"flash_attn": False, "kv_type": "q8_0"} not in [
        {k: c[k] for k in ("flash_attn", "kv_type")} for c in sweep
    ]


def test_bench_on_the_fake_backend_sweeps_only_what_the_backend_honours(autotune_host_factory: Any) -> None:
    host = autotune_host_factory(hardware=make_hardware(16))
    result = asyncio.run(run_bench(host, backend_name="fake", model="llama3.2:1b", budget_s=20, max_tokens=64))
    backend = host.backend("fake")
    assert isinstance(backend, FakeBackend)
    # kv_type and flash_attn are server settings on the fake: the 9 combinations collapse to 3 batch sizes
    assert [r.params for r in result.runs] == [
        {"num_batch": b, "flash_attn": None, "kv_type": None} for b in (256, 512, 1024)
    ]
    assert [p.num_batch for p in backend.plans] == [256, 256, 512, 512, 1024, 1024]  # warm-up + measured
    assert all(p.max_tokens == 16 for p in backend.plans)  # max_tokens is capped at 16
    run = result.runs[0]
    assert run.ok and run.honoured["num_batch"] == "at_load" and run.honoured["kv_type"] == "server_env"
    assert run.ttft_ms is not None and run.tokens_per_s and run.peak_memory_bytes
    assert result.archetype == classify(host.hardware).id and result.id == result.content_id()
    Contribution.model_validate_json(result.model_dump_json())  # the file format round-trips


def test_bench_stops_at_the_time_budget(autotune_host_factory: Any) -> None:
    host = autotune_host_factory(hardware=make_hardware(16))
    backend = host.backend("fake")
    assert isinstance(backend, FakeBackend)
    backend.chunk_delay = 0.1  # 5 words: 0.5 s per request, 1 s per combination (warm-up + measured)
    started = time.monotonic()
    result = asyncio.run(run_bench(host, backend_name="fake", model="llama3.2:1b", budget_s=1.7))
    assert time.monotonic() - started < 5
    assert result.budget_exhausted and len(result.runs) < 3


@pytest.mark.embedded
@pytest.mark.timeout(60)
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python not installed")
def test_bench_on_the_embedded_model() -> None:
    pytest.importorskip("autotune_plugins.backends.llamacpp")
    from autotune_core.config import Settings
    from autotune_core.host import PluginHost

    host = PluginHost(config=Settings(), hardware=make_hardware(16), env={"AUTOTUNE_LOAD_PLUGINS": "llamacpp"})
    if "llamacpp" not in host.backend_classes:
        pytest.skip("the llamacpp backend plugin did not register")
    # one combination (warm-up + measured): bounded even on a busy shared CPU
    sweep = [{"num_batch": 256, "flash_attn": True, "kv_type": "q8_0"}]

    async def go() -> Contribution:
        try:
            return await run_bench(host, backend_name="llamacpp", sweep=sweep, budget_s=25, max_tokens=4)
        finally:
            await host.stop()

    started = time.monotonic()
    result = asyncio.run(go())
    assert time.monotonic() - started < 30
    assert result.section == "embedded" and result.runs
    ok = [r for r in result.runs if r.ok]
    assert ok, [r.error for r in result.runs]
    assert all(r.tokens_per_s and r.tokens_per_s > 0 and r.peak_memory_bytes for r in ok)
    assert ok[0].params == sweep[0] and ok[0].honoured["kv_type"] == "at_load"


def test_mad_outliers() -> None:
    assert mad_outliers([10, 11, 10.5, 9.8, 60]) == [False, False, False, False, True]
    assert mad_outliers([10, 200]) == [False, False]  # too few to judge
    assert mad_outliers([10, 10, 10, 30]) == [False, False, False, True]


def test_merge_picks_the_best_rejects_outliers_conflicts_and_keeps_provenance(tmp_path: Path) -> None:
    subs = [contribution({256: 20 + i, 512: 30 + i, 1024: 25 + i}, seed=i) for i in range(4)]
    cheater = contribution({256: 400, 512: 10, 1024: 900}, seed=9)  # 10x everyone: a broken or fake run
    other_arch = contribution({256: 50, 512: 5, 1024: 5}, archetype="nvidia-ada-24gb", seed=7)
    files = []
    for index, c in enumerate([*subs, cheater, other_arch, subs[0]]):  # subs[0] twice: a duplicate
        path = tmp_path / f"c{index}.json"
        path.write_text(c.model_dump_json())
        files.append(path)
    (tmp_path / "bad.json").write_text(json.dumps({"format": "autotune-bench/1", "archetype": "x"}))
    (tmp_path / "broken.json").write_text("{nope")
    tampered = json.loads(subs[1].model_dump_json())
    tampered["runs"][0]["tokens_per_s"] = 9999
    (tmp_path / "tampered.json").write_text(json.dumps(tampered))
    good, bad = load_contributions(
        [*files, tmp_path / "bad.json", tmp_path / "broken.json", tmp_path / "tampered.json"]
    )
    assert len(bad) == 3 and all(why.startswith("malformed") for _w, why in bad)
    report = merge(good, rejected=bad, name="community", version=4)
    reasons = {where: why for where, why in report.rejected}
    assert reasons[cheater.id].startswith("outlier")
    assert reasons[other_arch.id].startswith("conflicting")
    assert "duplicate submission" in reasons.values()
    assert report.archetype == "cpu-x86-16gb" and sorted(report.accepted) == sorted(c.id for c in subs)
    best = report.best["chat-short"]
    assert best.params["num_batch"] == 512 and best.tokens_per_s == pytest.approx(31.5)
    assert report.agreement["chat-short"] == 1.0
    profile = report.profile_set.profiles["cpu-x86-16gb"]
    assert sorted(profile.submissions) == sorted(c.id for c in subs)
    assert profile.common is not None and profile.common.num_batch is not None
    value = profile.common.num_batch
    assert value.value == 512 and "4 submission(s)" in value.source and subs[0].id in value.source
    assert profile.common.kv_type is None  # never measured (the backend could not honour it): not claimed


def test_merge_respects_min_submissions_and_explicit_targets() -> None:
    a = contribution({256: 20, 512: 30}, seed=1)
    b = contribution({256: 21}, seed=2)
    report = merge([a, b], min_submissions=2)
    assert report.best["chat-short"].params["num_batch"] == 256  # 512 was measured by one submission only
    nvidia = contribution({256: 80}, archetype="nvidia-ada-24gb", seed=3)
    assert merge([a, b, nvidia], archetype="nvidia-ada-24gb").archetype == "nvidia-ada-24gb"
    with pytest.raises(ValueError, match="at least 3 submissions"):
        merge([a, b], min_submissions=3)


def test_learn_writes_a_local_overlay_that_wins_and_says_so(autotune_host_factory: Any) -> None:
    store = ProfileCache()
    measured = contribution({256: 20, 512: 35, 1024: 30}, archetype="cpu-x86-16gb")
    learned = learn(measured, store)
    assert learned.name == "local" and learned.priority >= 1000 and store.local_path.exists()
    second = contribution({256: 40, 512: 35}, archetype="cpu-x86-16gb", seed=5)
    again = learn(second, store)
    assert again.version == learned.version + 1  # versioned; the model's overlay was updated in place
    assert len(again.profiles["cpu-x86-16gb"].overlays) == 1
    assert [s.name for s in sets_to_register(store)] == ["bundled", "local"]
    host = autotune_host_factory(BundledProfilesPlugin(), AutoTunePlugin(), hardware=make_hardware(16))
    sets, errors = profile_sets(host.archetype_sets)
    assert not errors
    resolved = resolve(sets, classify(host.hardware), section=None, model="llama3.2:1b")
    assert resolved["num_batch"].value == 256 and resolved["num_batch"].origin.set_name == "local"
    plan = plan_request(host, "hello", model="llama3.2:1b")
    step = plan.steps("num_batch")[0]
    assert (step.plugin, step.new) == ("auto-tune", 256)
    assert "(local overlay, model overlay 'llama3.2:1b'" in step.reason and second.id in step.reason
    other_model = plan_request(host, "hello", model="gemma3:270m")
    assert other_model.steps("num_batch") == []  # learned for one model only


def test_learn_as_default_applies_to_every_model(autotune_host_factory: Any) -> None:
    store = ProfileCache()
    learn(contribution({256: 20, 512: 35}, archetype="cpu-x86-16gb"), store, as_default=True)
    host = autotune_host_factory(BundledProfilesPlugin(), AutoTunePlugin(), hardware=make_hardware(16))
    plan: Any = plan_request(host, "hello", model="gemma3:270m")
    assert plan.num_batch == 512 and "local overlay" in plan.steps("num_batch")[0].reason
