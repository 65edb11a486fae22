"""model-fit: pre-flight before a model loads — will weights + KV + overhead fit in memory?

Why: loading a model that cannot fit either fails after a long wait or pages the machine to a halt.
Before the first request to a model (and in ``autotune fit MODEL``) we classify the load as SAFE /
MARGINAL / SWAP_RISK / OOM, work out the largest safe context and KV type, and suggest a lighter
quantization. An OOM load is refused with a clear error unless forced. Unlike the original, the safe
context and KV type are not discarded: they show in the trace and as advice.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any

import click
from pydantic import BaseModel, ConfigDict, Field

from autotune_core import ChatRequest, HookContext, Plan, hookimpl
from autotune_core.buckets import buckets_up_to
from autotune_core.errors import ModelTooLarge
from autotune_core.hardware import GiB, HardwareSnapshot
from autotune_core.memfit import QUANT_BYTES_PER_PARAM, RUNTIME_OVERHEAD_BYTES, kv_bytes_estimate, weights_bytes
from autotune_core.modelinfo import ModelInfo
from autotune_core.profiles import Profile

VERDICTS: tuple[str, ...] = ("SAFE", "MARGINAL", "SWAP_RISK", "OOM")
#: the context the fit is judged at (the original's reference, docs/backend-facts.md#model-fit)
REFERENCE_CTX = 8192
#: lighter quantizations are suggested down to this one (below it quality drops sharply)
LIGHTEST_SUGGESTED = "Q4_K_S"


def _gib(value: int) -> str:
    return f"{value / GiB:.2f} GiB"


@dataclass
class FitReport:
    """The pre-flight verdict for one model on this machine."""

    model: str
    verdict: str | None
    weights_bytes: int | None
    kv_bytes: int
    reference_ctx: int
    overhead_bytes: int
    total_bytes: int
    available_bytes: int
    capacity_bytes: int
    safe_max_context: int
    recommended_kv: str
    exact_kv: bool
    suggestion: str | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.verdict is None:
            return f"{self.model}: size unknown, fit not assessed"
        text = (
            f"{self.verdict}: weights {_gib(self.weights_bytes or 0)} + KV {_gib(self.kv_bytes)} "
            f"(q8_0 at {self.reference_ctx}{'' if self.exact_kv else ', conservative estimate'}) + overhead "
            f"{_gib(self.overhead_bytes)} = {_gib(self.total_bytes)} of {_gib(self.available_bytes)} available; "
            f"safe max context {self.safe_max_context}, KV {self.recommended_kv}"
        )
        return text + (f"; {self.suggestion}" if self.suggestion else "")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def assess(
    model: ModelInfo | None,
    name: str,
    hardware: HardwareSnapshot,
    profile: Profile,
    *,
    parallel: int = 1,
    loaded: bool = False,
) -> FitReport:
    """Classify a load. Pure arithmetic on facts already gathered (no I/O)."""
    weights = weights_bytes(model)
    model_max = model.context_length if model is not None else None
    ref = min(REFERENCE_CTX, model_max) if model_max else REFERENCE_CTX
    kv_ref, exact = kv_bytes_estimate(model, ref, "q8_0", parallel=parallel)
    available = hardware.memory_budget_bytes(0)
    capacity = int(hardware.accelerator_memory_bytes * (0.75 if hardware.unified_memory else 1.0))
    if weights is None:
        return FitReport(
            name,
            None,
            None,
            kv_ref,
            ref,
            RUNTIME_OVERHEAD_BYTES,
            0,
            available,
            capacity,
            0,
            profile.kv_type,
            exact,
            notes=["model size unknown"],
        )
    if loaded:
        available += weights  # its weights are already counted as used
    total = weights + RUNTIME_OVERHEAD_BYTES + kv_ref
    kv_min, _ = kv_bytes_estimate(model, 512, "q8_0", parallel=parallel)
    util = total / available if available > 0 else float("inf")
    if weights + RUNTIME_OVERHEAD_BYTES + kv_min > 0.95 * capacity:
        verdict = "OOM"
    elif total > available or util > 0.92:
        verdict = "SWAP_RISK"
    elif util > 0.85:
        verdict = "MARGINAL"
    else:
        verdict = "SAFE"
    kv = "q8_0" if verdict in ("MARGINAL", "SWAP_RISK") else profile.kv_type
    safe = 0
    if verdict != "OOM":
        for size in buckets_up_to(model_max):
            used, _ = kv_bytes_estimate(model, size, kv, parallel=parallel)
            if weights + RUNTIME_OVERHEAD_BYTES + used <= 0.85 * available:
                safe = size
    report = FitReport(
        name, verdict, weights, kv_ref, ref, RUNTIME_OVERHEAD_BYTES, total, available, capacity, safe, kv, exact
    )
    if verdict in ("SWAP_RISK", "OOM"):
        report.suggestion = suggest_quant(model, available, kv_ref)
    return report


def suggest_quant(model: ModelInfo | None, available: int, kv_ref: int) -> str | None:
    """The heaviest lighter quantization that would fit comfortably (≤ 85 % of available)."""
    if model is None or not model.parameter_count:
        return None
    current = (model.quantization or "").upper()
    current_bpp = QUANT_BYTES_PER_PARAM.get(current, 2.0)
    for quant, bpp in QUANT_BYTES_PER_PARAM.items():
        if bpp >= current_bpp:
            continue
        estimate = int(model.parameter_count * bpp)
        if estimate + RUNTIME_OVERHEAD_BYTES + kv_ref < 0.85 * available:
            return f"a {quant} build (~{_gib(estimate)} of weights) would fit"
        if quant == LIGHTEST_SUGGESTED:
            break
    return None


class ModelFitSettings(BaseModel):
    """``[plugins.model-fit]``"""

    model_config = ConfigDict(extra="forbid")

    #: load even when the pre-flight says OOM (the request's ``options.force`` does the same per request)
    allow_oom: bool = False
    #: models remembered as already checked
    max_models: int = Field(default=256, ge=1)


class ModelFitPlugin:
    """Pre-flight fit check before a load; refuses OOM loads unless forced; adds ``autotune fit``."""

    name = "model-fit"
    Settings = ModelFitSettings

    def __init__(self) -> None:
        self._seen: OrderedDict[tuple[str, str], str | None] = OrderedDict()

    @hookimpl
    def pre_request(self, ctx: HookContext, request: ChatRequest, plan: Plan) -> None:
        settings = ctx.settings(ModelFitSettings)
        key = (ctx.backend_name, plan.model)
        if plan.model in ctx.loaded:
            return  # already resident: nothing to pre-flight
        if key in self._seen and not ctx.loaded:
            return  # checked on the first request this host saw
        report = assess(ctx.model, plan.model, ctx.hardware, ctx.profile, parallel=plan.parallel or 1)
        plan.record(self.name, "fit", None, report.verdict, report.summary())
        if report.verdict == "OOM":
            forced = plan.force or bool(request.options.get("force")) or settings.allow_oom
            if not forced:
                raise ModelTooLarge(
                    f"{plan.model} will not fit in memory: {report.summary()}. Use a smaller model"
                    + (f" ({report.suggestion})" if report.suggestion else "")
                    + ", or force the load with options.force=true / [plugins.model-fit] allow_oom = true"
                )
            plan.advise(f"{plan.model}: loading although pre-flight says OOM (forced): {report.summary()}")
        elif report.verdict in ("MARGINAL", "SWAP_RISK"):
            plan.advise(
                f"{plan.model} is {report.verdict}: use KV {report.recommended_kv} and at most "
                f"{report.safe_max_context} tokens of context" + (f"; {report.suggestion}" if report.suggestion else "")
            )
        self._seen[key] = report.verdict
        self._seen.move_to_end(key)
        while len(self._seen) > settings.max_models:
            self._seen.popitem(last=False)

    @hookimpl
    def register_commands(self, cli: click.Group) -> None:
        cli.add_command(fit_command)


@click.command("fit")
@click.argument("model")
@click.option("--profile", default=None, help="fast, balanced or quality (default: the config's).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def fit_command(model: str, profile: str | None, as_json: bool) -> None:
    """Will MODEL fit in memory? SAFE / MARGINAL / SWAP_RISK / OOM, safe context, KV type, quantization."""
    from autotune_core.cli.common import echo_json, get_host, run
    from autotune_core.pipeline import Pipeline
    from autotune_core.profiles import get_profile

    host = get_host()

    async def gather() -> tuple[ModelInfo | None, str, bool]:
        pipeline = Pipeline(host)
        backend, upstream = await pipeline.resolver.resolve(model)
        info = await pipeline.model_info(backend, upstream)
        try:
            loaded = any(entry.name == upstream for entry in await backend.loaded_models())
        except Exception:
            loaded = False
        return info, upstream, loaded

    info, upstream, loaded = run(gather())
    report = assess(info, upstream, host.hardware, get_profile(profile or host.config.profile), loaded=loaded)
    if as_json:
        echo_json(report.as_dict())
    else:
        click.echo(f"model:            {upstream}{' (loaded)' if loaded else ''}")
        click.echo(f"verdict:          {report.verdict or 'unknown (model size not reported)'}")
        if report.verdict is not None:
            click.echo(f"weights:          {_gib(report.weights_bytes or 0)}")
            click.echo(
                f"KV (q8_0 @ {report.reference_ctx}): {_gib(report.kv_bytes)}"
                + ("" if report.exact_kv else " (conservative estimate: architecture unknown)")
            )
            click.echo(f"overhead:         {_gib(report.overhead_bytes)}")
            click.echo(f"total:            {_gib(report.total_bytes)} of {_gib(report.available_bytes)} available")
            click.echo(f"safe max context: {report.safe_max_context}")
            click.echo(f"recommended KV:   {report.recommended_kv}")
            if report.suggestion:
                click.echo(f"suggestion:       {report.suggestion}")
    if report.verdict == "OOM":
        raise click.exceptions.Exit(1)
