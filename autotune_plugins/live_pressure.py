"""live-pressure: shrink the context and quantize the KV cache while memory is tight.

Why: at 80 / 88 / 93 % memory use (or while the system is actively swapping) a smaller KV cache is
the difference between a slow answer and a machine that pages itself to a halt. Fixes two bugs of
the original (docs/backend-facts.md#memory-pressure):
reductions are applied after bucket snapping and snapped *down* to a bucket (so they
survive), and never below the prompt plus a minimum output reserve (no silent truncation).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from autotune_core import ChatRequest, Choice, HookContext, Plan, fold_stage, hookimpl
from autotune_core.buckets import MIN_CTX, snap_down, snap_up
from autotune_core.hardware import Pressure
from autotune_core.modelinfo import smaller_kv_type

TIERS: tuple[str, ...] = ("normal", "moderate", "high", "critical")


class LivePressureSettings(BaseModel):
    """``[plugins.live-pressure]``"""

    model_config = ConfigDict(extra="forbid")

    moderate_percent: float = Field(default=80.0, gt=0, le=100)
    high_percent: float = Field(default=88.0, gt=0, le=100)
    critical_percent: float = Field(default=93.0, gt=0, le=100)
    #: swap growth (bytes/s) that counts as active swapping: raises the tier by one
    swap_growth_bytes_per_s: float = Field(default=8 * 1024 * 1024, gt=0)
    #: context multipliers per tier
    factors: dict[str, float] = Field(default_factory=lambda: {"moderate": 0.9, "high": 0.75, "critical": 0.5})
    #: KV type forced from the "high" tier up
    kv_type: str = "q8_0"
    #: output tokens always left free after the prompt
    min_output_reserve: int = Field(default=256, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> LivePressureSettings:
        if not self.moderate_percent < self.high_percent < self.critical_percent:
            raise ValueError("expected moderate_percent < high_percent < critical_percent")
        for tier, factor in self.factors.items():
            if tier not in TIERS[1:] or not 0 < factor <= 1:
                raise ValueError(f"factors: {tier}={factor}; expected moderate/high/critical in (0, 1]")
        return self


class LivePressurePlugin:
    """Memory-pressure tiers: moderate ×0.9, high ×0.75 + q8_0, critical ×0.5 + q8_0."""

    name = "live-pressure"
    Settings = LivePressureSettings

    def __init__(self) -> None:
        #: the latest pressure the sampler reported (on_pressure)
        self.latest = Pressure()

    @hookimpl
    def on_pressure(self, ctx: HookContext, pressure: Pressure) -> None:
        self.latest = pressure

    def current(self, ctx: HookContext) -> Pressure:
        """The newer of the request's snapshot and the last on_pressure report."""
        return ctx.pressure if ctx.pressure.timestamp >= self.latest.timestamp else self.latest

    def tier_of(self, ctx: HookContext, settings: LivePressureSettings) -> tuple[str, str]:
        pressure = self.current(ctx)
        percent = max(pressure.ram_percent, pressure.gpu_memory_percent or 0.0)
        level = TIERS.index(pressure.tier)
        by_percent = (
            3
            if percent >= settings.critical_percent
            else 2
            if percent >= settings.high_percent
            else 1
            if percent >= settings.moderate_percent
            else 0
        )
        level = max(level, by_percent)
        swapping = pressure.swap_growth_bytes_per_s >= settings.swap_growth_bytes_per_s
        if level == 0 and not swapping:
            return "normal", ""  # the common case, asked twice a request: no reason to format
        why = f"memory {percent:.0f}%"
        if swapping:
            level = min(3, level + 1)
            why += f", swapping {pressure.swap_growth_bytes_per_s / 2**20:.0f} MiB/s"
        return TIERS[level], why

    @hookimpl
    @fold_stage("adjust")
    def choose_num_ctx(
        self, ctx: HookContext, request: ChatRequest, plan: Plan, proposal: Choice[Any] | None
    ) -> Choice[int] | None:
        settings = ctx.settings(LivePressureSettings)
        tier, why = self.tier_of(ctx, settings)
        if tier == "normal" or proposal is None or proposal.value is None:
            return None
        current = int(proposal.value)
        model_max = ctx.model.context_length if ctx.model is not None else None
        factor = settings.factors.get(tier, 1.0)
        target = max(MIN_CTX, snap_down(int(current * factor), model_max))
        reserve = min(settings.min_output_reserve, plan.max_tokens) if plan.max_tokens else settings.min_output_reserve
        prompt = plan.prompt_tokens or 0
        floor = min(current, snap_up(prompt + reserve, model_max))
        if target >= current:
            return None
        if target < floor:
            if floor >= current:
                plan.record(
                    self.name,
                    "num_ctx",
                    current,
                    current,
                    f"{tier} pressure ({why}): no reduction, the prompt ({prompt}) + {reserve} output "
                    f"tokens need {current}",
                )
                return None
            return Choice(
                floor,
                f"{tier} pressure ({why}): ×{factor} → {target} would cut the prompt "
                f"({prompt} + {reserve} output); kept {floor}, the smallest bucket that fits",
                safety=tier == "critical",
            )
        # at the critical tier this is a safety step: it may lower even a context the client set explicitly
        return Choice(
            target, f"{tier} pressure ({why}): {current} ×{factor} snapped down to {target}", safety=tier == "critical"
        )

    @hookimpl
    @fold_stage("adjust")
    def choose_kv_type(
        self, ctx: HookContext, request: ChatRequest, plan: Plan, proposal: Choice[Any] | None
    ) -> Choice[str] | None:
        settings = ctx.settings(LivePressureSettings)
        tier, why = self.tier_of(ctx, settings)
        if tier not in ("high", "critical"):
            return None
        current = proposal.value if proposal is not None and proposal.value else "f16"
        wanted = smaller_kv_type(current, settings.kv_type)
        if proposal is not None and wanted == proposal.value:
            return None
        return Choice(wanted, f"{tier} pressure ({why}): KV {current} → {wanted}", safety=tier == "critical")
