"""From raw samples to findings: per-arm summaries, paired ratios with intervals, truncation, curves.

KV bytes come from the model's architecture (:meth:`ModelInfo.kv_bytes`, the formula verified against
llama.cpp's own allocation log) at the context the backend reports having loaded; "needed" is the same
formula at the tokens the request really used (prompt + answer, unpadded). A prompt counts as truncated
when the backend's own prompt token count (Ollama's ``prompt_eval_count``) is below 95 % of what another
arm's backend counted for the same prompt, or when autotune's truncation check flagged it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..modelinfo import ModelInfo
from .runner import ProofResult, Record
from .stats import Ratio, median, paired_ratio, slope

#: below this share of the largest count any arm reported, a prompt was cut
TRUNCATED_BELOW = 0.95


@dataclass
class ArmSummary:
    arm: str
    requests: int = 0
    errors: int = 0
    ttft_ms: float | None = None
    total_ms: float | None = None
    tokens_per_s: float | None = None
    num_ctx: int | None = None
    kv_type: str | None = None
    kv_allocated: int | None = None
    kv_needed: int | None = None
    reloads: int = 0
    reloads_known: bool = True
    truncated: int = 0
    identical_to_plain: int | None = None
    compared: int = 0
    cached_tokens: float | None = None
    #: median prompt tokens the backend itself counted
    prompt_tokens: int | None = None
    tool_calls: int = 0
    wall_s: float | None = None
    #: conversation/agent: median TTFT per turn or step index
    curve: dict[int, float] = field(default_factory=dict)
    ttft_slope_ms: float | None = None
    first_error: str | None = None


@dataclass
class ScenarioFindings:
    name: str
    title: str
    skipped: str
    arms: dict[str, ArmSummary]
    ratios: dict[str, list[Ratio]]
    notes: list[str]


def _info(result: ProofResult) -> ModelInfo | None:
    if not result.info:
        return None
    try:
        info = ModelInfo.model_validate(result.info)
    except ValueError:
        return None
    return info if info.known else None


def _kv(info: ModelInfo | None, tokens: int | None, kv_type: str | None, *, pad: bool) -> int | None:
    if info is None or not tokens:
        return None
    try:
        return info.kv_bytes(tokens, kv_type or "f16", pad=256 if pad else 1)
    except ValueError:
        return None


def _key(record: Record) -> tuple[str, int]:
    return record.item, record.step


def analyse(result: ProofResult) -> list[ScenarioFindings]:
    info = _info(result)
    out = []
    arm_names = list(result.arms)
    for scenario in result.scenarios:
        if not scenario.items:
            out.append(ScenarioFindings(scenario.name, scenario.title, scenario.skipped, {}, {}, list(scenario.notes)))
            continue
        by_arm = {name: {_key(r): r for r in result.samples(scenario.name, name)} for name in arm_names}
        expected: dict[tuple[str, int], int] = {}
        for records in by_arm.values():
            for key, record in records.items():
                if record.sample.error is None:
                    expected[key] = max(expected.get(key, 0), record.sample.prompt_tokens)
        summaries = {
            name: _summary(name, records, expected, info, by_arm.get("plain", {})) for name, records in by_arm.items()
        }
        for name, summary in summaries.items():
            summary.wall_s = result.arms[name].wall_s.get(scenario.name)
        ratios: dict[str, list[Ratio]] = {}
        for baseline in ("plain", "direct"):
            if baseline in by_arm and "autotune" in by_arm:
                ratios[baseline] = _ratios(by_arm["autotune"], by_arm[baseline], info)
        notes = list(scenario.notes)
        notes += _scenario_notes(scenario.name, summaries)
        busy = _busy_note([r.load for r in result.records if r.scenario == scenario.name])
        if busy:
            notes.append(busy)
        out.append(ScenarioFindings(scenario.name, scenario.title, "", summaries, ratios, notes))
    return out


def _summary(
    name: str,
    records: dict[tuple[str, int], Record],
    expected: dict[tuple[str, int], int],
    info: ModelInfo | None,
    plain: dict[tuple[str, int], Record],
) -> ArmSummary:
    ok = [r for r in records.values() if r.sample.error is None]
    errors = [r for r in records.values() if r.sample.error is not None]
    summary = ArmSummary(
        arm=name, requests=len(records), errors=len(errors), first_error=errors[0].sample.error if errors else None
    )
    summary.ttft_ms = median([r.sample.ttft_ms for r in ok if r.sample.ttft_ms is not None])
    summary.total_ms = median([r.sample.total_ms for r in ok])
    summary.tokens_per_s = median([r.sample.tokens_per_s for r in ok if r.sample.tokens_per_s])
    summary.num_ctx = _int_median([r.sample.num_ctx for r in ok if r.sample.num_ctx])
    kv_types = [r.sample.kv_type for r in ok if r.sample.kv_type]
    summary.kv_type = max(set(kv_types), key=kv_types.count) if kv_types else None
    allocated = [_kv(info, r.sample.num_ctx, r.sample.kv_type, pad=True) for r in ok]
    needed = [_kv(info, r.sample.prompt_tokens + r.sample.completion_tokens, r.sample.kv_type, pad=False) for r in ok]
    summary.kv_allocated = _int_median(allocated)
    summary.kv_needed = _int_median(needed)
    known = [r.sample.reloaded for r in ok]
    summary.reloads = sum(1 for v in known if v)
    summary.reloads_known = bool(known) and all(v is not None for v in known)
    for key, record in records.items():
        sample = record.sample
        want = expected.get(key, 0)
        short = bool(want) and sample.prompt_tokens < TRUNCATED_BELOW * want
        if sample.error is None and (sample.flagged_truncated or short):
            summary.truncated += 1
    if name != "plain" and plain:
        pairs = [
            (records[k].sample.text, plain[k].sample.text)
            for k in records
            if k in plain and records[k].sample.error is None and plain[k].sample.error is None
        ]
        summary.compared = len(pairs)
        summary.identical_to_plain = sum(1 for a, b in pairs if a == b)
    cached = [float(r.sample.cached_tokens) for r in ok if r.sample.cached_tokens is not None]
    summary.cached_tokens = median(cached)
    summary.prompt_tokens = _int_median([r.sample.prompt_tokens for r in ok if r.sample.prompt_tokens])
    summary.tool_calls = sum(r.sample.tool_calls for r in ok)
    steps: dict[int, list[float]] = {}
    for r in ok:
        if r.step and r.sample.ttft_ms is not None:
            steps.setdefault(r.step, []).append(r.sample.ttft_ms)
    summary.curve = {k: v for k, v in ((k, median(vs)) for k, vs in sorted(steps.items())) if v is not None}
    summary.ttft_slope_ms = slope([(float(k), v) for k, v in summary.curve.items()])
    return summary


def _int_median(values: list[int | None]) -> int | None:
    present = [float(v) for v in values if v is not None]
    m = median(present)
    return int(m) if m is not None else None


def _ratios(
    arm: dict[tuple[str, int], Record], base: dict[tuple[str, int], Record], info: ModelInfo | None
) -> list[Ratio]:
    keys = [k for k in arm if k in base and arm[k].sample.error is None and base[k].sample.error is None]

    def pairs(get: Any) -> list[tuple[float | None, float | None]]:
        return [(get(arm[k]), get(base[k])) for k in keys]

    return [
        paired_ratio("TTFT", pairs(lambda r: r.sample.ttft_ms)),
        paired_ratio("total time", pairs(lambda r: r.sample.total_ms)),
        paired_ratio("tokens/s", pairs(lambda r: r.sample.tokens_per_s), lower_is_better=False),
        paired_ratio("KV bytes", pairs(lambda r: _kv(info, r.sample.num_ctx, r.sample.kv_type, pad=True))),
    ]


def _busy_note(loads: list[float]) -> str | None:
    """A warning when other work loaded the CPUs during the scenario: its timing ratios are then not evidence."""
    cpus = os.cpu_count() or 1
    if not loads or max(loads) <= cpus:
        return None
    return (
        f"the machine was busy: load average {min(loads):.1f}–{max(loads):.1f} on {cpus} CPUs during this "
        "scenario; timing ratios may reflect other processes, not autotune (memory figures are unaffected)"
    )


def _scenario_notes(name: str, arms: dict[str, ArmSummary]) -> list[str]:
    notes = []
    for summary in arms.values():
        if summary.errors:
            notes.append(
                f"{summary.arm}: {summary.errors} of {summary.requests} requests failed ({summary.first_error})"
            )
        if summary.truncated:
            notes.append(
                f"{summary.arm}: {summary.truncated} prompt(s) truncated (the backend counted fewer prompt "
                "tokens than the full prompt has)"
            )
        if not summary.reloads_known and summary.requests:
            notes.append(f"{summary.arm}: reloads not reported by this backend")
    if name == "document":
        counts = ", ".join(f"{s.arm} {s.prompt_tokens}" for s in arms.values() if s.prompt_tokens)
        if counts:
            notes.append(f"prompt tokens the backend itself counted (median): {counts}")
    if name in ("conversation", "agent"):
        reuse = ", ".join(
            f"{s.arm} {s.cached_tokens:.0f} of {s.prompt_tokens}"
            for s in arms.values()
            if s.cached_tokens is not None and s.prompt_tokens
        )
        if reuse:
            notes.append(f"prefix reuse, median prompt tokens served from the backend's cache: {reuse}")
        for summary in arms.values():
            if summary.ttft_slope_ms is not None:
                notes.append(
                    f"{summary.arm}: TTFT grows {summary.ttft_slope_ms:+.1f} ms per "
                    f"{'turn' if name == 'conversation' else 'step'}"
                )
    return notes


def headline(findings: list[ScenarioFindings]) -> list[str]:
    """One line per scenario: the autotune/plain ratios that are outside the noise, or that none are."""
    lines = []
    for finding in findings:
        if finding.skipped:
            lines.append(f"{finding.title}: {finding.skipped}")
            continue
        parts = [f"{r.metric} {r.text()}" for r in finding.ratios.get("plain", []) if r.ratio is not None]
        if not parts:
            failed = [s.arm for s in finding.arms.values() if s.requests and s.errors == s.requests]
            why = f"every request failed in: {', '.join(failed)}" if failed else "no paired samples"
            parts = [why]
        lines.append(f"{finding.title}: " + "; ".join(parts))
    return lines
