"""noswap-guard: the last word on num_ctx and the KV type, so the KV cache fits in memory.

Why: a KV cache that does not fit pushes the machine into swap, which is slower than any context
is worth. Exact bytes come from the architecture (sliding-window layers, parallel slots); the
budget is the memory the model can use (VRAM on discrete GPUs, Apple's unified-memory rules) minus a
safety margin, minus the weights if the model still has to load. Reduction levels follow the
original (ok ×1 f16 … l5 512 q8_0; docs/backend-facts.md#memory-pressure) with its bugs fixed:
a requested q8_0 is never upgraded back to
f16, and the context never drops below the prompt (if nothing fits: the smallest size that holds the
prompt, flagged ``swap_risk`` with advice).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from autotune_core import ChatRequest, Choice, HookContext, Plan, StashKey, fold_stage, hookimpl
from autotune_core.buckets import MIN_CTX, snap_down, snap_up
from autotune_core.hardware import GiB
from autotune_core.memfit import kv_bytes_estimate, weights_bytes
from autotune_core.modelinfo import smaller_kv_type

#: (name, context factor or None for 512, KV type)
LEVELS: tuple[tuple[str, float | None, str], ...] = (
    ("ok", 1.0, "f16"),
    ("l1_trim", 0.75, "f16"),
    ("l2_halve", 0.5, "f16"),
    ("l3_q8", 0.5, "q8_0"),
    ("l4_quarter", 0.25, "q8_0"),
    ("l5_min", None, "q8_0"),
)

_REQUIRED_KV: StashKey[str] = StashKey("noswap-guard.required_kv")
#: the request's budget, worked out once (both folds and their explanations ask for it)
_BUDGET: StashKey[tuple[int, str]] = StashKey("noswap-guard.budget")


def fmt_bytes(value: int) -> str:
    return f"{value / GiB:.2f} GiB" if abs(value) >= GiB // 4 else f"{value / 2**20:.0f} MiB"


#: walks remembered (cleared when full): models × contexts × pressure steps seen recently
_WALK_MEMO = 256


class _Walk(NamedTuple):
    """Where the level walk ended: the context and KV type to use, the level, the KV bytes, and why."""

    size: int
    kv: str
    level: str
    used: int
    fits: bool
    reason: str


def _explain(
    size: int, kv: str, level: str, used: int, exact: bool, fits: bool, budget: int, note: str, parallel: int
) -> str:
    how = "exact" if exact else "conservative estimate (architecture unknown)"
    slots = f" × {parallel} slots" if parallel > 1 else ""
    relation = "≤" if fits else ">"
    return (
        f"level {level}: KV {fmt_bytes(used)} at {size} {kv}{slots} ({how}) {relation} budget "
        f"{fmt_bytes(budget)} ({note})"
    )


class NoSwapGuardSettings(BaseModel):
    """``[plugins.noswap-guard]``"""

    model_config = ConfigDict(extra="forbid")

    #: memory kept free for the OS and other programs
    safety_margin_gib: float = Field(default=1.5, ge=0)
    #: parallel slots with their own KV (Ollama's OLLAMA_NUM_PARALLEL); None: the plan's value or 1
    parallel: int | None = Field(default=None, ge=1)
    #: output tokens always left free after the prompt
    min_output_reserve: int = Field(default=256, ge=1)


class NoSwapGuardPlugin:
    """Exact KV bytes against the memory budget; reduces context and precision in levels."""

    name = "noswap-guard"
    Settings = NoSwapGuardSettings

    def __init__(self) -> None:
        #: (model id, context, KV type, budget, note, slots, floor) -> (model, walk); the model is kept to
        #: check identity (an id can be reused once a model's info is dropped)
        self._walks: dict[tuple[Any, ...], tuple[Any, _Walk]] = {}
        #: (discrete GPU, unified memory, margin GiB, weights bytes) -> how the budget was worked out
        self._notes: dict[tuple[Any, ...], str] = {}
        #: the last budget and the objects it was worked out from (compared by identity)
        self._last_budget: tuple[Any, Any, Any, Any, bool, tuple[int, str]] | None = None

    def _settings(self, ctx: HookContext) -> NoSwapGuardSettings:
        settings = ctx.settings(NoSwapGuardSettings)
        return settings

    def budget(self, ctx: HookContext, plan: Plan) -> tuple[int, str]:
        """Bytes the KV cache may take, and how that was worked out (once per request; across requests while
        the settings, hardware, pressure sample and model are the same objects: the sampler replaces its
        sample every 250 ms, so consecutive requests mostly ask the same question). Hooks treat those objects
        as read-only (the core replaces a snapshot or sample, it never edits one); edited in place, the old
        budget would stay."""
        cached = ctx.stash.get(_BUDGET)
        if cached is None:
            settings, loaded = self._settings(ctx), plan.model in ctx.loaded
            last = self._last_budget
            if (
                last is not None
                and last[0] is settings
                and last[1] is ctx.hardware
                and last[2] is ctx.pressure
                and last[3] is ctx.model
                and last[4] == loaded
            ):
                cached = last[5]
            else:
                cached = self._budget(ctx, plan)
                self._last_budget = (settings, ctx.hardware, ctx.pressure, ctx.model, loaded, cached)
            ctx.stash[_BUDGET] = cached
        return cached

    def _budget(self, ctx: HookContext, plan: Plan) -> tuple[int, str]:
        settings = self._settings(ctx)
        margin = int(settings.safety_margin_gib * GiB)
        hardware = ctx.hardware
        base = hardware.memory_budget_bytes(margin)
        gpu = hardware.primary_gpu
        discrete = gpu is not None and not gpu.integrated and not hardware.unified_memory
        if not discrete and ctx.pressure.available_bytes > 0:
            base = min(base, max(0, ctx.pressure.available_bytes - margin))
        weights = weights_bytes(ctx.model) if plan.model not in ctx.loaded else 0
        if weights:
            base -= weights
        key = (discrete, hardware.unified_memory, settings.safety_margin_gib, weights)
        note = self._notes.get(key)
        if note is None:  # the same few words on every request to a model: formatted once
            note = "free VRAM" if discrete else "unified memory" if hardware.unified_memory else "available RAM"
            note += f" − {settings.safety_margin_gib:g} GiB margin"
            if weights:
                note += f" − weights {fmt_bytes(weights)} (not loaded yet)"
            if len(self._notes) >= _WALK_MEMO:
                self._notes.clear()
            self._notes[key] = note
        return base, note

    def _floor(self, ctx: HookContext, plan: Plan, current: int, reserve: int) -> int:
        """The smallest context that still holds the prompt and a minimum output (``reserve`` tokens)."""
        if plan.max_tokens:
            reserve = min(reserve, plan.max_tokens)
        model_max = ctx.model.context_length if ctx.model is not None else None
        return min(current, snap_up((plan.prompt_tokens or 0) + reserve, model_max))

    def _walk(self, ctx: HookContext, plan: Plan, current: int, kv: str) -> _Walk:
        """First level that fits, with its explanation. Pure arithmetic on (model, context, KV type, budget,
        slots, floor), so remembered: consecutive requests to a model mostly ask the same question."""
        budget, note = self.budget(ctx, plan)
        settings = self._settings(ctx)
        parallel = settings.parallel or plan.parallel or 1
        floor = self._floor(ctx, plan, current, settings.min_output_reserve)
        key = (id(ctx.model), current, kv, budget, note, parallel, floor)
        found = self._walks.get(key)
        if found is not None and found[0] is ctx.model:
            return found[1]
        size, level_kv, level, used, exact, fits = self._levels(ctx, current, kv, budget, parallel, floor)
        walk = _Walk(
            size,
            level_kv,
            level,
            used,
            fits,
            _explain(size, level_kv, level, used, exact, fits, budget, note, parallel),
        )
        if len(self._walks) >= _WALK_MEMO:
            self._walks.clear()
        self._walks[key] = (ctx.model, walk)
        return walk

    def _levels(
        self, ctx: HookContext, current: int, kv: str, budget: int, parallel: int, floor: int
    ) -> tuple[int, str, str, int, bool, bool]:
        """(num_ctx, kv, level, bytes, exact, fits) of the first level that fits."""
        model_max = ctx.model.context_length if ctx.model is not None else None
        for level, factor, level_kv in LEVELS:
            if factor is None:
                size = MIN_CTX
            elif factor == 1.0:
                size = current
            else:
                size = max(MIN_CTX, snap_down(int(current * factor), model_max))
            size = min(current, max(size, floor))
            level_kv = smaller_kv_type(level_kv, kv)  # never upgrade a requested q8_0
            used, exact = kv_bytes_estimate(ctx.model, size, level_kv, parallel=parallel)
            if used <= budget:
                return size, level_kv, level, used, exact, True
        level_kv = smaller_kv_type("q8_0", kv)
        used, exact = kv_bytes_estimate(ctx.model, floor, level_kv, parallel=parallel)
        return floor, level_kv, "none", used, exact, False

    def _flag_swap(self, ctx: HookContext, plan: Plan, used: int) -> None:
        budget, _ = self.budget(ctx, plan)
        plan.flags["swap_risk"] = True
        plan.advise(
            f"{plan.model}: even the smallest context that holds the prompt needs {fmt_bytes(used)} of KV "
            f"cache but only {fmt_bytes(max(budget, 0))} is free: expect swapping; close other programs, "
            "shorten the conversation, or use a smaller model or lighter quantization"
        )

    def _kv_hint(self, ctx: HookContext) -> str:
        """The KV type the kv fold will most likely settle on (re-checked in the kv guard)."""
        hint = ctx.profile.kv_type
        if ctx.pressure.tier in ("high", "critical"):
            hint = smaller_kv_type(hint, "q8_0")
        return hint

    @hookimpl(trylast=True)
    @fold_stage("guard")
    def choose_num_ctx(
        self, ctx: HookContext, request: ChatRequest, plan: Plan, proposal: Choice[Any] | None
    ) -> Choice[int] | None:
        if proposal is None or proposal.value is None:
            return None
        current = int(proposal.value)
        kv = self._kv_hint(ctx)
        walk = self._walk(ctx, plan, current, kv)
        reason = walk.reason
        plan.record(self.name, "kv_bytes", None, walk.used, reason)
        if walk.kv != kv:
            ctx.stash[_REQUIRED_KV] = walk.kv
        if not walk.fits:
            self._flag_swap(ctx, plan, walk.used)
            reason = "nothing fits; kept the smallest context that holds the prompt — " + reason
        # safety: the only kind of choice that may lower a context the client set explicitly
        return Choice(walk.size, reason, safety=True) if walk.size != current else None

    @hookimpl  # not trylast: flash-attention and prefix-protect check the final KV type after this
    @fold_stage("guard")
    def choose_kv_type(
        self, ctx: HookContext, request: ChatRequest, plan: Plan, proposal: Choice[Any] | None
    ) -> Choice[str] | None:
        if plan.num_ctx is None:
            return None
        actual = proposal.value if proposal is not None and proposal.value else "f16"
        required = ctx.stash.get(_REQUIRED_KV)
        kv = smaller_kv_type(actual, required) if required else actual
        walk = self._walk(ctx, plan, plan.num_ctx, kv)
        if walk.size != plan.num_ctx:
            plan.set(
                self.name,
                "num_ctx",
                walk.size,
                f"the KV type {actual} does not fit at {plan.num_ctx}; {walk.reason}",
                safety=True,
            )
        if not walk.fits and not plan.flags.get("swap_risk"):
            self._flag_swap(ctx, plan, walk.used)
        if (proposal.value if proposal is not None else "f16") == walk.kv:
            return None
        return Choice(walk.kv, walk.reason, safety=True)
