"""``autotune bench``: a short, bounded parameter sweep on this machine.

Each combination (n_batch × flash attention × KV type by default) becomes a Plan that the core's
:func:`reconcile_plan` checks against the backend's capabilities, so a knob the backend cannot
honour is recorded as such and never swept for nothing. Per combination: one warm-up request
(it pays for the reload an at-load knob causes), then measured requests with a tiny prompt and
``max_tokens`` ≤ 16. The whole sweep stops at the time budget and says so in the contribution.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import psutil

from autotune_core import __version__
from autotune_core.archetypes import classify, section_for
from autotune_core.backend import Availability, Backend, reconcile_plan
from autotune_core.hardware import GiB
from autotune_core.host import PluginHost
from autotune_core.messages import ChatRequest, Message
from autotune_core.plan import Plan

from .submission import Contribution, HardwareSummary, RunResult

SWEEP_KNOBS = ("num_batch", "flash_attn", "kv_type")
PROMPT = (
    "Summarise in one short sentence: the quick brown fox jumps over the lazy dog while the "
    "farmer watches from the porch, counting the clouds that drift across a pale autumn sky."
)
MAX_TOKENS_LIMIT = 16


def default_sweep(batches: Sequence[int] = (256, 512, 1024)) -> list[dict[str, Any]]:
    """n_batch × flash on/off × KV f16/q8_0, minus q8_0 without flash (a quantized V needs FA)."""
    return [
        {"num_batch": b, "flash_attn": fa, "kv_type": kv}
        for b, fa, kv in itertools.product(batches, (True, False), ("f16", "q8_0"))
        if fa or kv == "f16"
    ]


class _PeakRss:
    """Samples this process's RSS in a thread while a run is in flight."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._proc = psutil.Process()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> _PeakRss:
        self.peak = self._proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)


async def _one(backend: Backend, plan: Plan, timeout: float, scenario: str) -> RunResult:
    request = ChatRequest(
        model=plan.model, messages=list(plan.messages), max_tokens=plan.max_tokens, temperature=0.0, stream=True
    )
    params = {knob: getattr(plan, knob) for knob in SWEEP_KNOBS}
    started = time.perf_counter()
    first: float | None = None
    chunks = 0
    completion = 0
    decode_ms: float | None = None
    try:
        with _PeakRss() as rss:
            async with asyncio.timeout(timeout):
                async for chunk in backend.stream_chat(request, plan):
                    if chunk.content and first is None:
                        first = time.perf_counter()
                    chunks += 1 if chunk.content else 0
                    if chunk.done:
                        completion = chunk.usage.completion_tokens if chunk.usage else 0
                        decode_ms = chunk.timings.decode_ms if chunk.timings else None
    except Exception as exc:  # a failing combination is a result, not a crash
        return RunResult(
            params=params,
            honoured=dict(plan.applied),
            scenario=scenario,
            ok=False,
            error=f"{type(exc).__name__}: {exc}"[:300],
            wall_ms=(time.perf_counter() - started) * 1000,
        )
    end = time.perf_counter()
    completion = completion or chunks
    if decode_ms:
        tps = completion / (decode_ms / 1000)
    elif first is not None and end > first and completion > 1:
        tps = (completion - 1) / (end - first)
    else:
        tps = None
    return RunResult(
        params=params,
        honoured=dict(plan.applied),
        scenario=scenario,
        ttft_ms=(first - started) * 1000 if first is not None else None,
        tokens_per_s=tps,
        completion_tokens=completion,
        peak_memory_bytes=rss.peak,
        wall_ms=(end - started) * 1000,
    )


def hardware_summary(host: PluginHost) -> HardwareSummary:
    hw = host.hardware
    gpus = [
        {
            "name": g.name,
            "vendor": g.vendor,
            "vram_gb": round(g.memory_total_bytes / GiB, 1),
            "integrated": g.integrated,
            "compute_capability": g.compute_capability,
            "gfx_target": g.gfx_target,
        }
        for g in hw.gpus
    ]
    return HardwareSummary(
        os=hw.os,
        cpu=hw.cpu.brand,
        cpu_arch=hw.cpu.arch,
        ram_gb=round(hw.ram_total_bytes / GiB, 1),
        unified_memory=hw.unified_memory,
        gpus=gpus,
    )


async def _ready(backend: Backend, backend_name: str, model: str | None) -> tuple[Availability, str]:
    """The backend's availability and the model to sweep (its first listed one unless named); refuses early."""
    availability = await backend.available()
    if not availability.ok:
        raise RuntimeError(f"backend {backend_name!r} is not available: {availability.reason}")
    if model is None:
        models = await backend.list_models()
        if not models:
            raise RuntimeError(f"backend {backend_name!r} lists no models; pass --model")
        model = models[0].name
    return availability, model


def _report(progress: Callable[[str], None] | None, result: RunResult) -> None:
    """One line per recorded run, so a long sweep shows it is moving."""
    if progress:
        progress(
            f"{result.params}: "
            + (
                f"TTFT {result.ttft_ms or 0:.0f} ms, {result.tokens_per_s or 0:.1f} tok/s"
                if result.ok
                else result.error
            )
        )


async def _measure(
    backend: Backend,
    plan: Plan,
    *,
    repeats: int,
    deadline: float,
    scenario: str,
    runs: list[RunResult],
    progress: Callable[[str], None] | None,
) -> bool:
    """Warm-up plus ``repeats`` runs of one combination into ``runs``; True when the time budget ran out.

    The warm-up is not recorded unless it fails (it pays for any reload); a failure ends the combination.
    """
    for index in range(repeats + 1):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return True
        result = await _one(backend, plan, min(remaining, 120.0), scenario)
        if not result.ok and result.error.startswith("TimeoutError") and remaining < 120.0:
            return True  # the budget ran out mid-run: not a failure of this combination
        if index > 0 or not result.ok:
            runs.append(result)
            _report(progress, result)
        if not result.ok:
            break
    return False


async def run_bench(
    host: PluginHost,
    *,
    backend_name: str,
    model: str | None = None,
    sweep: Sequence[dict[str, Any]] | None = None,
    repeats: int = 1,
    max_tokens: int = 8,
    num_ctx: int = 1024,
    budget_s: float = 60.0,
    scenario: str = "chat-short",
    progress: Callable[[str], None] | None = None,
) -> Contribution:
    """Run the sweep on one backend and model; bounded by ``budget_s`` in total."""
    max_tokens = max(1, min(max_tokens, MAX_TOKENS_LIMIT))
    backend = host.backend(backend_name)
    availability, model = await _ready(backend, backend_name, model)
    caps = backend.capabilities()
    deadline = time.monotonic() + budget_s
    runs: list[RunResult] = []
    seen: set[tuple[Any, ...]] = set()
    exhausted = False
    for combo in sweep if sweep is not None else default_sweep():
        plan = Plan(
            model=model,
            backend=backend.name,
            num_ctx=num_ctx,
            max_tokens=max_tokens,
            messages=[Message(role="user", content=PROMPT)],
            **combo,
        )
        reconcile_plan(plan, caps, backend=backend.name)
        effective = tuple(getattr(plan, knob) for knob in SWEEP_KNOBS)
        if effective in seen:
            continue  # the backend ignores the knob that differs: nothing new to measure
        seen.add(effective)
        exhausted = await _measure(
            backend, plan, repeats=repeats, deadline=deadline, scenario=scenario, runs=runs, progress=progress
        )
        if exhausted:
            break
    if not runs:
        raise RuntimeError("the time budget ended before any run completed")
    archetype = classify(host.hardware)
    return Contribution(
        archetype=archetype.id,
        hardware=hardware_summary(host),
        backend=backend.name,
        section=section_for(backend.name, caps.dialect),
        backend_version=availability.version,
        model=model,
        runs=runs,
        autotune_version=__version__,
        timestamp=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        budget_exhausted=exhausted,
    ).with_id()
