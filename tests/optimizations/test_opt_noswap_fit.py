"""noswap-guard and model-fit."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opt_support import chat, context, make_host, plan, set_scope, steps

from autotune_core.backend import KnobScope
from autotune_core.errors import ModelTooLarge
from autotune_core.hardware import GiB, GpuInfo
from autotune_core.memfit import kv_bytes_estimate, weights_bytes
from autotune_core.modelinfo import ModelInfo
from autotune_core.profiles import get_profile
from autotune_core.testing import GEMMA_270M, LLAMA_1B, make_hardware
from autotune_plugins.model_fit import assess

#: an 8B llama-shaped model: 32 layers × 8 KV heads × 128 dims → 128 KiB/token at f16
LLAMA_8B = ModelInfo(
    name="llama3.1:8b",
    architecture="llama",
    block_count=32,
    head_count=32,
    head_count_kv=8,
    key_length=128,
    value_length=128,
    embedding_length=4096,
    context_length=131072,
    quantization="Q4_K_M",
    size_bytes=int(4.9 * GiB),
    parameter_count=8_030_000_000,
)


def guarded(available_gib: float, *, profile: str = "quality", at_load_kv: bool = True, **kw: object) -> object:
    host = make_host(
        "ctx-sizing",
        "ctx-buckets",
        "kv-precision",
        "noswap-guard",
        profile=profile,
        hardware=make_hardware(ram_gib=64, available_gib=available_gib),
        **kw,
    )  # type: ignore[arg-type]
    if at_load_kv:
        set_scope(host, "kv_type", KnobScope.AT_LOAD)
    return host


def kv_of(p: object, model: ModelInfo) -> int:
    return model.kv_bytes(p.num_ctx, p.kv_type or "f16")  # type: ignore[attr-defined]


def test_fits_untouched_with_exact_bytes_in_the_trace() -> None:
    p = plan(guarded(40), chat("hi", max_tokens=20000), info=LLAMA_8B)
    assert p.num_ctx == 32768 and p.kv_type == "f16"
    entry = p.steps("kv_bytes")[0]
    assert entry.new == LLAMA_8B.kv_bytes(32768, "f16") and "exact" in entry.reason and "level ok" in entry.reason


def test_levels_reduce_context_then_precision() -> None:
    # budget = 10 − 1.5 − 4.9 weights = 3.6 GiB; 32768 f16 = 4 GiB → l1 (24576 → snapped 16384, 2 GiB)
    p = plan(guarded(10), chat("hi", max_tokens=20000), info=LLAMA_8B)
    assert (p.num_ctx, p.kv_type) == (16384, "f16")
    assert "l1_trim" in steps(p, "noswap-guard", "num_ctx")[0]
    # budget 7.5 − 1.5 − 4.9 = 1.1 GiB: 16384 f16 = 2 GiB no; l3 16384 q8_0 = 1.06 GiB fits
    p = plan(guarded(7.5), chat("hi", max_tokens=20000), info=LLAMA_8B)
    assert (p.num_ctx, p.kv_type) == (16384, "q8_0")
    assert kv_of(p, LLAMA_8B) <= int(1.1 * GiB)


def test_never_upgrades_a_requested_q8_0() -> None:
    p = plan(guarded(40, profile="fast"), chat("hi"), info=LLAMA_8B)
    assert p.kv_type == "q8_0"  # fits at f16 too, but the fast profile asked for q8_0


def test_never_below_the_prompt_and_flags_swap_risk() -> None:
    host = guarded(6.6)  # budget 6.6 − 1.5 − 4.9 = 0.2 GiB
    prompt = "alpha beta gamma delta " * 1200  # ~4800 tokens: needs ≥ 0.3 GiB even at q8_0
    p = plan(host, chat(prompt, max_tokens=64), info=LLAMA_8B)
    assert p.prompt_tokens is not None and p.num_ctx is not None
    assert p.num_ctx > p.prompt_tokens
    assert p.flags.get("swap_risk") is True and any("swapping" in a for a in p.advice)
    assert p.kv_type == "q8_0"


def test_sliding_window_and_parallel_slots_are_counted() -> None:
    host = guarded(40, settings={"noswap-guard": {"parallel": 4}})
    p = plan(host, chat("hi", max_tokens=20000), info=GEMMA_270M)
    entry = p.steps("kv_bytes")[0]
    assert entry.new == GEMMA_270M.kv_bytes(p.num_ctx, "f16", parallel=4)
    assert entry.new < 4 * 18 * 2 * 256 * 2 * p.num_ctx  # far less than if every layer held the whole context
    assert "× 4 slots" in entry.reason


def test_unknown_architecture_is_conservative_and_says_so() -> None:
    mystery = ModelInfo(name="mystery:7b", size_bytes=int(4 * GiB))
    p = plan(guarded(40), chat("hi", max_tokens=2000), info=mystery)
    entry = p.steps("kv_bytes")[0]
    assert "conservative estimate" in entry.reason
    assert entry.new >= LLAMA_8B.kv_bytes(p.num_ctx, "f16")


def test_kv_guard_downgrades_when_the_fold_ends_above_the_hint() -> None:
    """kv-precision configured to f32 (bigger than the profile hint): the kv guard still enforces the budget."""
    host = guarded(9, settings={"kv-precision": {"override": "f32"}})
    p = plan(host, chat("hi", max_tokens=20000), info=LLAMA_8B)
    budget = int(9 * GiB - 1.5 * GiB) - LLAMA_8B.size_bytes  # type: ignore[operator]
    assert kv_of(p, LLAMA_8B) <= budget and p.kv_type != "f32"


def test_discrete_gpu_budget_is_free_vram() -> None:
    hw = make_hardware(ram_gib=64, available_gib=60)
    hw.gpus = [GpuInfo(vendor="nvidia", name="RTX", memory_total_bytes=8 * GiB, memory_used_bytes=1 * GiB)]
    host = make_host("ctx-sizing", "ctx-buckets", "noswap-guard", profile="quality", hardware=hw)
    p = plan(host, chat("hi", max_tokens=20000), info=LLAMA_8B)
    # VRAM budget: 7 − 1.5 − 4.9 = 0.6 GiB → well below what 60 GiB of RAM would allow
    assert LLAMA_8B.kv_bytes(p.num_ctx, "q8_0") <= int(0.6 * GiB)
    assert "free VRAM" in p.steps("kv_bytes")[0].reason


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    available=st.floats(min_value=5.0, max_value=20.0),
    words=st.integers(min_value=1, max_value=3000),
    max_tokens=st.integers(min_value=1, max_value=30000),
    profile=st.sampled_from(["fast", "balanced", "quality"]),
    model=st.sampled_from([LLAMA_8B, LLAMA_1B, GEMMA_270M]),
)
def test_property_kv_never_exceeds_budget_when_anything_fits(
    available: float, words: int, max_tokens: int, profile: str, model: ModelInfo
) -> None:
    host = guarded(available, profile=profile)
    try:
        p = plan(host, chat("word " * words, max_tokens=max_tokens), info=model)
    except Exception as exc:
        from autotune_core.errors import ContextOverflow

        assert isinstance(exc, ContextOverflow)
        return
    assert p.num_ctx is not None and p.prompt_tokens is not None and p.num_ctx > p.prompt_tokens
    budget = int((available - 1.5) * GiB) - (weights_bytes(model) or 0)
    if not p.flags.get("swap_risk"):
        assert kv_of(p, model) <= budget
    else:
        smallest, _ = kv_bytes_estimate(model, p.num_ctx, "q8_0")
        assert smallest > budget  # flagged only when even the prompt's minimum does not fit


# -- model-fit -------------------------------------------------------------------------------------


def test_assess_verdicts() -> None:
    balanced = get_profile("balanced")
    safe = assess(LLAMA_8B, "m", make_hardware(64, 40), balanced)
    assert safe.verdict == "SAFE" and safe.recommended_kv == "f16" and safe.safe_max_context == 131072
    marginal = assess(LLAMA_8B, "m", make_hardware(64, 6.6), balanced)
    assert marginal.verdict == "MARGINAL" and marginal.recommended_kv == "q8_0"
    assert 0 < marginal.safe_max_context < 131072
    swap = assess(LLAMA_8B, "m", make_hardware(64, 6.0), balanced)
    assert swap.verdict == "SWAP_RISK" and swap.suggestion and "Q4_K_S" in swap.suggestion
    assert assess(LLAMA_8B, "m", make_hardware(64, 5.5), balanced).suggestion is None  # nothing light enough
    oom = assess(LLAMA_8B, "m", make_hardware(4, 3.5), balanced)
    assert oom.verdict == "OOM" and oom.safe_max_context == 0
    unknown = assess(ModelInfo(name="x"), "x", make_hardware(), balanced)
    assert unknown.verdict is None


def test_oom_load_refused_unless_forced() -> None:
    host = make_host("model-fit", hardware=make_hardware(4, 3.5))
    with pytest.raises(ModelTooLarge, match="will not fit"):
        plan(host, chat("hi"), info=LLAMA_8B)
    forced = plan(host, chat("hi", options={"force": True}), info=LLAMA_8B)
    assert forced.steps("fit")[0].new == "OOM" and any("forced" in a for a in forced.advice)
    allowed = make_host("model-fit", hardware=make_hardware(4, 3.5), settings={"model-fit": {"allow_oom": True}})
    assert plan(allowed, chat("hi"), info=LLAMA_8B).steps("fit")[0].new == "OOM"


def test_checked_once_per_model_and_skipped_when_loaded() -> None:
    host = make_host("model-fit", hardware=make_hardware(64, 6.6))
    first = plan(host, chat("hi"), info=LLAMA_8B)
    assert first.steps("fit")[0].new == "MARGINAL" and any("MARGINAL" in a for a in first.advice)
    assert not plan(host, chat("hi"), info=LLAMA_8B).steps("fit")
    fresh = make_host("model-fit", hardware=make_hardware(4, 3.5))
    ctx = context(fresh, model=LLAMA_8B, loaded={"llama3.1:8b": 4096})
    from autotune_core.plan import Plan

    p = Plan(model="llama3.1:8b")
    asyncio.run(fresh.acall("pre_request", ctx=ctx, request=chat("hi", model="llama3.1:8b"), plan=p))
    assert not p.steps("fit")  # resident already: no pre-flight, no refusal


def test_fit_command_registered_and_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    import click
    from click.testing import CliRunner

    from autotune_core.cli import common

    host = make_host("model-fit", hardware=make_hardware(64, 40))
    monkeypatch.setattr(common, "_host", host)

    @click.group()
    def cli() -> None:
        pass

    host.call("register_commands", cli=cli)
    assert "fit" in cli.commands
    out = CliRunner().invoke(cli, ["fit", "llama3.2:1b", "--json"])
    assert out.exit_code == 0, out.output
    assert '"verdict": "SAFE"' in out.output
    oom_host = make_host("model-fit", hardware=make_hardware(1, 0.5))
    monkeypatch.setattr(common, "_host", oom_host)
    out = CliRunner().invoke(cli, ["fit", "llama3.2:1b"])
    assert out.exit_code == 1 and "OOM" in out.output


def test_budget_is_reused_only_while_its_inputs_are_the_same_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    """The budget is remembered across requests, keyed by the identity of what it was worked out from: the same
    inputs are not worked out again; a new pressure sample, another model, a new hardware snapshot, or the model
    becoming loaded (its weights no longer count) gives a new budget."""
    from autotune_core.hardware import Pressure
    from autotune_plugins.noswap_guard import NoSwapGuardPlugin

    host = guarded(40)
    guard = host.plugin("noswap-guard")
    assert isinstance(guard, NoSwapGuardPlugin)
    planned = plan(host, chat("hi"), info=LLAMA_8B).model_copy(update={"model": LLAMA_8B.name})
    worked_out = []
    original = guard._budget
    monkeypatch.setattr(guard, "_budget", lambda ctx, plan: worked_out.append(1) or original(ctx, plan))
    sample = Pressure(available_bytes=int(20 * GiB))

    def budget(pressure: Pressure, loaded: dict[str, int | None] | None = None, model: ModelInfo = LLAMA_8B) -> int:
        return guard.budget(context(host, model=model, pressure=pressure, loaded=loaded), planned)[0]

    first = budget(sample)
    assert budget(sample) == first and len(worked_out) == 1  # the same inputs: reused, not worked out again
    assert budget(Pressure(available_bytes=int(20 * GiB))) == first and len(worked_out) == 2  # a new sample object
    assert budget(Pressure(available_bytes=int(10 * GiB))) == first - int(10 * GiB)
    # each of the rest comes straight after a call with the same inputs but one, so only that one can miss
    budget(sample)
    assert budget(sample, loaded={LLAMA_8B.name: 4096}) == first + weights_bytes(LLAMA_8B)  # weights loaded now
    assert len(worked_out) == 5
    budget(sample)
    budget(sample, model=LLAMA_8B.model_copy())  # another model object
    assert len(worked_out) == 7
    budget(sample)
    host.hardware = host.hardware.model_copy()
    budget(sample)  # a new hardware snapshot
    assert len(worked_out) == 9
