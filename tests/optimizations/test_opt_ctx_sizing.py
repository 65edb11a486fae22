"""ctx-sizing: prompt + the request's own max_tokens (+ thinking) + headroom, clamped."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opt_support import chat, make_host, plan, steps

from autotune_core.buckets import buckets_up_to
from autotune_core.errors import ConfigError
from autotune_core.modelinfo import ModelInfo
from autotune_core.testing import GEMMA_270M, LLAMA_1B


def test_uses_the_requests_own_max_tokens() -> None:
    host = make_host("ctx-sizing")
    p = plan(host, chat("Say hi", max_tokens=100))
    assert p.num_ctx == 512  # prompt ~12 + 100 + 256 < 512: raised to the minimum
    p = plan(host, chat("Say hi", max_tokens=2000))
    assert p.num_ctx == p.prompt_tokens + 2000 + 256
    assert "request max_tokens" in steps(p, "ctx-sizing")[0]


def test_profile_default_output_when_absent() -> None:
    for profile, output in (("fast", 512), ("balanced", 1024), ("quality", 4096)):
        p = plan(make_host("ctx-sizing", profile=profile), chat("Say hi"))
        assert p.num_ctx == p.prompt_tokens + output + 256, profile


def test_thinking_models_get_more_room() -> None:
    host = make_host("ctx-sizing")
    qwen = LLAMA_1B.model_copy(update={"name": "qwen3:4b"})
    base = plan(host, chat("Say hi", max_tokens=600))
    think = plan(host, chat("Say hi", max_tokens=600), info=qwen)
    assert think.num_ctx == base.num_ctx + 1024
    assert "thinking 1024" in steps(think, "ctx-sizing")[0]
    by_flag = plan(host, chat("Say hi", max_tokens=600, think=True))
    assert by_flag.num_ctx == base.num_ctx + 1024
    off = plan(host, chat("Say hi", max_tokens=600, think=False), info=qwen)
    assert off.num_ctx == base.num_ctx  # an explicit think=false wins over the name
    cap = LLAMA_1B.model_copy(update={"name": "mystery:1b", "capabilities": ["completion", "thinking"]})
    assert plan(host, chat("Say hi", max_tokens=600), info=cap).num_ctx == base.num_ctx + 1024
    tuned = make_host("ctx-sizing", settings={"ctx-sizing": {"thinking_overhead": 2048, "headroom": 0}})
    assert plan(tuned, chat("Say hi", max_tokens=600), info=qwen).num_ctx == base.prompt_tokens + 600 + 2048


def test_clamped_to_model_and_profile_and_says_when_output_cannot_fit() -> None:
    host = make_host("ctx-sizing", profile="quality")
    p = plan(host, chat("Say hi", max_tokens=60000), info=GEMMA_270M)
    assert p.num_ctx == GEMMA_270M.context_length  # model max 32768 < quality's 32768 ≥ … clamp
    reason = steps(p, "ctx-sizing")[0]
    assert "cannot fit" in reason and "clamped" in reason
    balanced = plan(make_host("ctx-sizing"), chat("Say hi", max_tokens=60000))
    assert balanced.num_ctx == 8192


def test_prompt_larger_than_profile_max_goes_up_to_model_max_not_refused() -> None:
    host = make_host("ctx-sizing", profile="fast")  # fast: max 2048
    long = "word " * 3000
    p = plan(host, chat(long, max_tokens=16))
    assert p.num_ctx is not None and p.num_ctx > p.prompt_tokens
    assert "exceeds the fast profile" in steps(p, "ctx-sizing")[0]
    strict = make_host("ctx-sizing", profile="fast", settings={"ctx-sizing": {"prompt_may_exceed_profile": False}})
    from autotune_core.errors import ContextOverflow

    with pytest.raises(ContextOverflow):
        plan(strict, chat(long, max_tokens=16))


def test_invalid_settings_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"plugins\.ctx-sizing\.headroom"):
        make_host("ctx-sizing", settings={"ctx-sizing": {"headroom": -5}})
    with pytest.raises(ConfigError, match="unknown"):
        make_host("ctx-sizing", settings={"ctx-sizing": {"unknown": 1}})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    words=st.integers(min_value=0, max_value=2500),
    max_tokens=st.integers(min_value=1, max_value=40000),
    model_max=st.sampled_from([2048, 4096, 8192, 32768, 40960, 131072]),
    profile=st.sampled_from(["fast", "balanced", "quality"]),
)
def test_property_fits_prompt_and_output_when_possible_never_above_model_max(
    words: int, max_tokens: int, model_max: int, profile: str
) -> None:
    """Whole default stack (sizing → buckets → pressure → guard) on a roomy machine."""
    host = make_host(profile=profile)
    info = ModelInfo(**{**LLAMA_1B.model_dump(), "name": f"prop-{model_max}", "context_length": model_max})
    request = chat("hello " * words, max_tokens=max_tokens)
    try:
        p = plan(host, request, info=info)
    except Exception as exc:  # only a prompt that cannot fit the model may be refused
        from autotune_core.errors import ContextOverflow

        assert isinstance(exc, ContextOverflow)
        assert words + 16 >= model_max // 2
        return
    assert p.num_ctx is not None and p.prompt_tokens is not None
    assert p.num_ctx <= model_max
    assert p.num_ctx > p.prompt_tokens
    from autotune_core.profiles import get_profile

    ceiling = min(get_profile(profile).max_context, model_max)
    if p.prompt_tokens + max_tokens + 256 <= ceiling:
        assert p.num_ctx >= p.prompt_tokens + max_tokens
    assert p.num_ctx in buckets_up_to(model_max)
