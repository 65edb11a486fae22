"""ctx-buckets: snapping, and the reload-aware sticky policy on at-load backends."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from opt_support import chat, fake, make_host, plan, pressure, run, set_scope, steps

from autotune_core.backend import KnobScope
from autotune_core.buckets import CTX_BUCKETS, buckets_up_to, snap_down, snap_up
from autotune_plugins.ctx_buckets import CtxBucketsPlugin


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sticky_host(clock: Clock | None = None, **kw: object) -> tuple[CtxBucketsPlugin, object]:
    from opt_support import CtxSizingPlugin

    buckets = CtxBucketsPlugin(clock=clock or Clock())
    host = make_host(plugins=[CtxSizingPlugin(), buckets], **kw)  # type: ignore[arg-type]
    return buckets, host


def test_ladder_and_snapping() -> None:
    assert buckets_up_to(32768) == CTX_BUCKETS
    assert buckets_up_to(131072)[-3:] == (32768, 65536, 131072)
    assert buckets_up_to(40960)[-1] == 40960  # the trained context is the top rung, never above it
    assert snap_up(1413) == 1536 and snap_down(1413) == 1024 and snap_up(10**7, 8192) == 8192
    assert snap_down(100) == 512


@given(st.integers(min_value=1, max_value=300000), st.sampled_from([2048, 32768, 40960, 131072]))
def test_property_snap_bounds(n: int, model_max: int) -> None:
    up, down = snap_up(n, model_max), snap_down(n, model_max)
    assert up <= model_max and down <= model_max
    assert up >= min(n, model_max) and (down <= n or down == 512)


def test_per_request_backends_just_snap() -> None:
    _buckets, host = sticky_host()
    set_scope(host, "num_ctx", KnobScope.PER_REQUEST)
    first = plan(host, chat("hi", max_tokens=2000))
    second = plan(host, chat("hi", max_tokens=100))
    assert first.num_ctx == 3072 and second.num_ctx == 512
    assert "snapped" in steps(first, "ctx-buckets")[0]


def test_conversation_reloads_only_on_first_turn() -> None:
    buckets, host = sticky_host()
    history: list[tuple[str, str]] = []
    system = "You are a careful assistant. " * 40
    for turn in range(10):
        p, _ = run(host, chat(f"Question number {turn}: what next?", system=system, history=history, max_tokens=32))
        history.append((f"Question number {turn}: what next?", "A short answer with a few words in it. " * 3))
    backend = fake(host)
    assert backend.loads == 1 and backend.reloads == 0
    assert buckets.resizes == 0
    assert buckets.loaded_size("fake", "llama3.2:1b") == p.num_ctx


def test_keeps_loaded_size_when_need_shrinks_and_counts_avoided_reloads() -> None:
    buckets, host = sticky_host()
    big, _ = run(host, chat("hi", max_tokens=3000))
    small, _ = run(host, chat("hi", max_tokens=50))
    assert small.num_ctx == big.num_ctx == 4096
    assert buckets.reloads_avoided == 1 and fake(host).reloads == 0
    assert "keep the loaded 4096" in steps(small, "ctx-buckets")[0]


def test_grows_when_needed_and_counts_the_resize() -> None:
    buckets, host = sticky_host()
    run(host, chat("hi", max_tokens=100))
    grown, _ = run(host, chat("hi", max_tokens=3000))
    assert grown.num_ctx == 4096 and buckets.resizes == 1 and fake(host).reloads == 1
    assert grown.flags["ctx_resize"] == "512->4096"


def test_shrinks_after_idle_only_with_hysteresis() -> None:
    clock = Clock()
    buckets, host = sticky_host(clock)
    run(host, chat("hi", max_tokens=3000))  # 4096
    clock.now += 601
    one_rung, _ = run(host, chat("hi", max_tokens=2300))  # needs 3072: one rung below → keep
    assert one_rung.num_ctx == 4096
    clock.now += 601
    shrunk, _ = run(host, chat("hi", max_tokens=50))
    assert shrunk.num_ctx == 512 and "idle" in steps(shrunk, "ctx-buckets")[0]
    assert buckets.resizes == 1


def test_shrinks_under_high_pressure_not_moderate() -> None:
    _buckets, host = sticky_host()
    run(host, chat("hi", max_tokens=3000))
    host.pressure = pressure("moderate", 82)
    assert run(host, chat("hi", max_tokens=50))[0].num_ctx == 4096
    host.pressure = pressure("high", 90)
    assert run(host, chat("hi", max_tokens=50))[0].num_ctx == 512


def test_state_is_bounded() -> None:
    buckets, host = sticky_host(settings={"ctx-buckets": {"max_models": 2}})
    backend = fake(host)
    from autotune_core.testing import LLAMA_1B

    for i in range(4):
        backend.models[f"m{i}"] = LLAMA_1B.model_copy(update={"name": f"m{i}"})
        run(host, chat("hi", model=f"m{i}", max_tokens=10))
    assert len(buckets._state) == 2 and buckets.loaded_size("fake", "m0") is None


def test_dry_run_changes_no_state() -> None:
    buckets, host = sticky_host()
    plan(host, chat("hi", max_tokens=3000))
    assert buckets.loaded_size("fake", "llama3.2:1b") is None and buckets.resizes == 0
