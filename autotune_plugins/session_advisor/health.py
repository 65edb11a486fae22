"""The advisor's brain, free of I/O: samples in, health score, state and actions out.

Score and signal thresholds are the original autotune's (docs/backend-facts.md#session-advisor). Unlike the
original, actions are undone
one at a time (newest first) after 90 s of stability, and a step can be used again once undone.
Time comes from an injectable clock so tests never sleep.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

MB = 1024 * 1024
GB = 1024 * MB

State = Literal["OPTIMAL", "WARNING", "ACTION_NEEDED", "CRITICAL", "DEGRADING", "STABLE_RECOVERING"]
Level = Literal["ok", "warn", "action", "critical"]
_RANK: dict[str, int] = {"ok": 0, "warn": 1, "action": 2, "critical": 3}

#: the original's context rungs (docs/backend-facts.md#session-advisor)
RUNGS: tuple[int, ...] = (131072, 65536, 32768, 16384, 8192, 4096, 2048, 1024, 512)
KV_STEPS: dict[str, str] = {"f32": "f16", "f16": "q8_0", "bf16": "q8_0", "q8_0": "q4_0"}
QUANT_LADDER: tuple[str, ...] = ("F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_K_S", "Q3_K_M", "Q2_K")


@dataclass(frozen=True)
class Sample:
    """One reading of the machine."""

    ram_percent: float
    ram_used_bytes: int = 0
    swap_percent: float = 0.0
    swap_used_bytes: int = 0
    cpu_percent: float | None = None
    #: normal | warm | warning | throttling | critical
    thermal: str = "normal"
    gpu_memory_percent: float | None = None
    timestamp: float = 0.0


@dataclass
class Action:
    at: float
    kind: str
    detail: str
    why: str
    reversible: bool = False
    undo: str = ""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def health_score(sample: Sample, swap_growth_mb_min: float = 0.0, ram_growth_mb_min: float = 0.0) -> int:
    """0–100; the original's deductions for memory, swap, swap growth, heat, CPU and RAM growth."""
    score = 100.0
    memory = sample.gpu_memory_percent if sample.gpu_memory_percent is not None else sample.ram_percent
    for limit, cost in ((97, 40), (94, 30), (90, 18), (85, 10), (80, 5)):
        if memory >= limit:
            score -= cost
            break
    for limit, cost in ((20, 30), (10, 22), (3, 14)):
        if sample.swap_percent >= limit:
            score -= cost
            break
    else:
        if sample.swap_used_bytes > 0.5 * GB:
            score -= 8
        elif sample.swap_used_bytes > 0.1 * GB:
            score -= 3
    score -= 10 if swap_growth_mb_min >= 50 else 5 if swap_growth_mb_min >= 10 else 0
    score -= {"critical": 15, "throttling": 12, "warning": 6, "warm": 2}.get(sample.thermal, 0)
    cpu = sample.cpu_percent or 0.0
    score -= 10 if cpu >= 90 else 5 if cpu >= 75 else 2 if cpu >= 60 else 0
    score -= 5 if ram_growth_mb_min > 300 else 2 if ram_growth_mb_min > 150 else 0
    return int(max(0.0, min(100.0, score)))


def label(score: int) -> str:
    return (
        "running smoothly"
        if score >= 90
        else "moderate load"
        if score >= 75
        else "pressure building"
        if score >= 55
        else "stressed"
        if score >= 35
        else "critical"
    )


@dataclass
class Knobs:
    """What the advisor currently imposes; read by the plugin's hooks and the server."""

    concurrency: int | None = None
    context_ceiling: int | None = None
    kv_type: str | None = None
    advice: list[str] = field(default_factory=list)


def _compare(baselines: dict[int, tuple[int, float]], recent: deque[float], level: int, value: float) -> float | None:
    """This answer against its level's baseline (then folded into it); the median recent ratio, or None
    before there is a baseline and three ratios."""
    n, mean = baselines.get(level, (0, 0.0))
    if n >= 5 and mean > 0:
        recent.append(value / mean)  # against the baseline before it
    w = min(n, 20)
    baselines[level] = (n + 1, (mean * w + value) / (w + 1))
    if len(recent) < 3:
        return None
    return statistics.median(recent)


class Advisor:
    """Health, state machine and ordered actions with a cooldown and scale-up."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        cooldown: float = 20.0,
        stable_after: float = 90.0,
        max_concurrency: int = 2,
        context: int = 8192,
        kv_type: str = "f16",
        history: int = 300,
    ) -> None:
        self.clock = clock
        self.cooldown = cooldown
        self.stable_after = stable_after
        self.base_concurrency = max_concurrency
        self.base_context = context
        self.base_kv = kv_type
        self.samples: deque[Sample] = deque(maxlen=history)
        self.knobs = Knobs()
        self.state: State = "OPTIMAL"
        self.score = 100
        self.signals: dict[str, tuple[Level, str]] = {}
        self.actions: deque[Action] = deque(maxlen=50)
        self.applied: list[Action] = []  # reversible actions in force, oldest first
        self.used: set[str] = set()
        self.last_action = -1e18
        self.ok_since: float | None = None
        self.pending_unload = False
        self.quantization: str | None = None
        self.model: str | None = None
        #: concurrency level -> (answers seen, running mean)
        self._ttft: dict[int, tuple[int, float]] = {}
        self._tps: dict[int, tuple[int, float]] = {}
        #: the last answers' ratios to their baselines
        self._ttft_recent: deque[float] = deque(maxlen=5)
        self._tps_recent: deque[float] = deque(maxlen=5)
        self.ttft_ratio: float | None = None
        self.tps_ratio: float | None = None

    # -- inputs -----------------------------------------------------------------------------------

    def observe_response(
        self,
        ttft_ms: float | None,
        tokens_per_s: float | None,
        *,
        model: str | None = None,
        quantization: str | None = None,
        concurrency: int | None = None,
    ) -> None:
        """Running means (weight min(n, 20)) are the baselines the next values are compared with, one per
        concurrency level (1, 2, 3–4, 5–8, ...: requests running when the answer came). A batching model
        server shares its steps between the requests it runs, so each one's tokens/s falls and its TTFT grows
        with the load by design; against a baseline from one request at a time that read as a collapse, and
        halving the concurrency then cost a quarter of llama-server's throughput at 8 clients
        (docs/benchmarks.md). Like is compared with like: a slowdown at the same load is still seen. The
        signal is the median of the last five answers' ratios (at least three): one answer that waited in the
        server's own queue is not a collapse."""
        self.model = model or self.model
        self.quantization = quantization or self.quantization
        level = (max(1, concurrency or 1) - 1).bit_length()  # 1 | 2 | 3-4 | 5-8 | 9-16 ...
        if ttft_ms is not None and ttft_ms > 0:
            self.ttft_ratio = _compare(self._ttft, self._ttft_recent, level, ttft_ms)
        if tokens_per_s is not None and tokens_per_s > 0:
            self.tps_ratio = _compare(self._tps, self._tps_recent, level, tokens_per_s)

    def _growth_mb_min(self, attr: str, now: float) -> float:
        window = [s for s in self.samples if now - s.timestamp <= 60]
        if len(window) < 2 or window[-1].timestamp <= window[0].timestamp:
            return 0.0
        delta = float(getattr(window[-1], attr)) - float(getattr(window[0], attr))
        return delta / MB / ((window[-1].timestamp - window[0].timestamp) / 60)

    def _signals(self, sample: Sample, swap_growth: float, ram_growth: float) -> dict[str, tuple[Level, str]]:
        out: dict[str, tuple[Level, str]] = {}
        memory = sample.gpu_memory_percent if sample.gpu_memory_percent is not None else sample.ram_percent
        which = "GPU memory" if sample.gpu_memory_percent is not None else "RAM"
        level: Level = "critical" if memory >= 94 else "action" if memory >= 88 else "warn" if memory >= 80 else "ok"
        out["memory"] = (level, f"{which} {memory:.0f} %")
        level = (
            "action"
            if swap_growth >= 50
            else "warn"
            if swap_growth >= 10 or sample.swap_used_bytes > 0.1 * GB
            else "ok"
        )
        out["swap"] = (level, f"swap {sample.swap_used_bytes / GB:.2f} GB, growing {swap_growth:.0f} MB/min")
        thermal = {"critical": "critical", "throttling": "action", "warning": "warn", "warm": "warn"}
        out["thermal"] = (thermal.get(sample.thermal, "ok"), f"thermal {sample.thermal}")  # type: ignore[assignment]
        out["ram_growth"] = ("warn" if ram_growth > 200 else "ok", f"RAM growing {ram_growth:.0f} MB/min")
        if self.tps_ratio is not None:
            ratio = self.tps_ratio
            out["throughput"] = (
                "action" if ratio < 0.5 else "warn" if ratio < 0.7 else "ok",
                f"tokens/s at {ratio:.2f}× baseline",
            )
        if self.ttft_ratio is not None:
            ratio = self.ttft_ratio
            out["ttft"] = (
                "action" if ratio > 2.0 else "warn" if ratio > 1.5 else "ok",
                f"TTFT at {ratio:.2f}× baseline",
            )
        return out

    # -- the step ---------------------------------------------------------------------------------

    def tick(self, sample: Sample) -> list[Action]:
        """Take one sample; returns the actions taken now (possibly a scale-up)."""
        now = self.clock()
        if not sample.timestamp:
            sample = Sample(**{**asdict(sample), "timestamp": now})
        self.samples.append(sample)
        swap_growth = self._growth_mb_min("swap_used_bytes", now)
        ram_growth = self._growth_mb_min("ram_used_bytes", now)
        self.score = health_score(sample, swap_growth, ram_growth)
        self.signals = self._signals(sample, swap_growth, ram_growth)
        worst = max((level for level, _ in self.signals.values()), key=_RANK.__getitem__)
        previous = self.state
        if worst == "ok":
            if self.ok_since is None:
                self.ok_since = now
            stable = now - self.ok_since >= self.stable_after
            self.state = "OPTIMAL" if stable or previous == "OPTIMAL" else "STABLE_RECOVERING"
        else:
            self.ok_since = None
            if worst == "critical":
                self.state = "CRITICAL"
            elif worst == "action":
                self.state = "ACTION_NEEDED"
            else:
                self.state = "DEGRADING" if previous in ("ACTION_NEEDED", "CRITICAL", "DEGRADING") else "WARNING"
        why = "; ".join(text for level, text in self.signals.values() if level != "ok") or "all signals ok"
        taken: list[Action] = []
        if self.state in ("ACTION_NEEDED", "CRITICAL") and now - self.last_action >= self.cooldown:
            action = self._next_action(now, why)
            if action is not None:
                taken.append(action)
        elif (
            self.ok_since is not None
            and self.applied
            and now - self.ok_since >= self.stable_after
            and now - self.last_action >= self.stable_after
        ):
            taken.append(self._scale_up(now))
        for action in taken:
            self.actions.append(action)
            self.last_action = now
        return taken

    def rebase_concurrency(self, base: int) -> None:
        """The server's real limit changed (a batching server's slots became known): a reduction in force
        keeps its proportion, and so does the value its scale-up restores."""
        old = self.base_concurrency
        if base == old or base < 1:
            return
        self.base_concurrency = base
        if self.knobs.concurrency is not None:
            self.knobs.concurrency = max(1, self.knobs.concurrency * base // old)
        for action in self.applied:
            if action.kind == "reduce_concurrency" and action.undo.isdigit():
                action.undo = str(max(1, int(action.undo) * base // old))

    def _next_action(self, now: float, why: str) -> Action | None:
        knobs = self.knobs
        concurrency = knobs.concurrency or self.base_concurrency
        if "reduce_concurrency" not in self.used and concurrency > 1:
            knobs.concurrency = max(1, concurrency // 2)
            return self._use(
                Action(
                    now,
                    "reduce_concurrency",
                    f"max concurrent {concurrency} → {knobs.concurrency}",
                    why,
                    reversible=True,
                    undo=str(concurrency),
                )
            )
        ceiling = knobs.context_ceiling or self.base_context
        lower = next((r for r in RUNGS if r < ceiling), None)
        if "reduce_context" not in self.used and lower is not None and lower >= 2048:
            knobs.context_ceiling = lower
            return self._use(
                Action(
                    now,
                    "reduce_context",
                    f"context ceiling {ceiling} → {lower}",
                    why,
                    reversible=True,
                    undo=str(ceiling),
                )
            )
        kv = knobs.kv_type or self.base_kv
        if "lower_kv_precision" not in self.used and kv in KV_STEPS:
            knobs.kv_type = KV_STEPS[kv]
            return self._use(
                Action(
                    now,
                    "lower_kv_precision",
                    f"KV cache {kv} → {knobs.kv_type} at the next load",
                    why,
                    reversible=True,
                    undo=kv,
                )
            )
        if "unload_idle_models" not in self.used:
            self.pending_unload = True
            return self._use(Action(now, "unload_idle_models", "unload models idle for a while", why))
        quant = (self.quantization or "").upper()
        if "lower_quantization" not in self.used and quant in QUANT_LADDER[:4]:
            target = QUANT_LADDER[QUANT_LADDER.index(quant) + 1]
            text = f"use a {target} build of {self.model or 'the model'} instead of {quant} (needs a reload)"
            knobs.advice.append(text)
            return self._use(Action(now, "lower_quantization", text, why))
        if "switch_to_smaller_model" not in self.used:
            text = f"switch {self.model or 'the model'} to a smaller model; this machine is under sustained pressure"
            knobs.advice.append(text)
            return self._use(Action(now, "switch_to_smaller_model", text, why))
        return None

    def _use(self, action: Action) -> Action:
        self.used.add(action.kind)
        if action.reversible:
            self.applied.append(action)
        return action

    def _scale_up(self, now: float) -> Action:
        """Undo the newest reversible action; its step may be used again later."""
        last = self.applied.pop()
        self.used.discard(last.kind)
        self.used.discard("unload_idle_models")
        knobs = self.knobs
        if last.kind == "reduce_concurrency":
            knobs.concurrency = None if int(last.undo) == self.base_concurrency else int(last.undo)
            detail = f"max concurrent back to {last.undo}"
        elif last.kind == "reduce_context":
            knobs.context_ceiling = None if int(last.undo) == self.base_context else int(last.undo)
            detail = f"context ceiling back to {last.undo}"
        else:
            knobs.kv_type = None if last.undo == self.base_kv else last.undo
            detail = f"KV cache back to {last.undo} at the next load"
        if not self.applied:
            knobs.advice.clear()
            self.used.clear()
        return Action(now, "scale_up", detail, f"stable for {self.stable_after:.0f} s")
