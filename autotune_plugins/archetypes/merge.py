"""Curate many bench contributions into one profile (``autotune profiles merge``), and turn one into
a local overlay (``autotune profiles learn``).

Curation, in order: reject malformed files and duplicates; keep one archetype and backend (the
majority, or the ones asked for) and reject the rest as conflicting; reject whole submissions whose
speed is an outlier against the others (median absolute deviation, modified z-score > 3.5, needs
≥ 3 submissions); reject outlier samples per parameter combination the same way; then pick, per
scenario, the combination with the best median tokens/s (ties: lower TTFT) that enough submissions
measured. Every value's source names the submissions it came from.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from autotune_core.archetypes import SCHEMA_VERSION, ProfileSet, load_profile_set

from .submission import Contribution

#: plan knob -> field per profile section (KV goes to both K and V where a section has both)
SECTION_FIELDS: dict[str, dict[str, tuple[str, ...]]] = {
    "common": {"num_batch": ("num_batch",), "flash_attn": ("flash_attn",), "kv_type": ("kv_type",)},
    "embedded": {"num_batch": ("n_batch",), "flash_attn": ("flash_attn",), "kv_type": ("type_k", "type_v")},
    "llamacpp": {
        "num_batch": ("batch_size",),
        "flash_attn": ("flash_attn",),
        "kv_type": ("cache_type_k", "cache_type_v"),
    },
    "ollama": {"num_batch": ("num_batch",), "flash_attn": ("flash_attention",), "kv_type": ("kv_cache_type",)},
    "lmstudio": {
        "num_batch": ("eval_batch_size",),
        "flash_attn": ("flash_attention",),
        "kv_type": ("k_cache_quantization", "v_cache_quantization"),
    },
    "vllm": {"num_batch": ("max_num_batched_tokens",)},
}
MAD_THRESHOLD = 3.5


@dataclass
class ComboStats:
    params: dict[str, Any]
    tokens_per_s: float
    ttft_ms: float | None
    samples: int
    submissions: list[str]


@dataclass
class MergeReport:
    profile_set: ProfileSet
    archetype: str
    backend: str
    accepted: list[str]
    rejected: list[tuple[str, str]] = field(default_factory=list)
    best: dict[str, ComboStats] = field(default_factory=dict)
    #: fraction of submissions whose own best combination is the chosen one, per scenario
    agreement: dict[str, float] = field(default_factory=dict)


def load_contributions(paths: Iterable[Path]) -> tuple[list[Contribution], list[tuple[str, str]]]:
    """Parse files (one contribution or a list each); malformed ones are rejected with the reason."""
    good: list[Contribution] = []
    bad: list[tuple[str, str]] = []
    for path in paths:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            bad.append((str(path), f"malformed: {exc}"))
            continue
        for index, item in enumerate(data if isinstance(data, list) else [data]):
            where = f"{path}[{index}]" if isinstance(data, list) else str(path)
            try:
                contribution = Contribution.model_validate(item)
            except ValidationError as exc:
                first = exc.errors()[0]
                bad.append((where, f"malformed: {'.'.join(map(str, first['loc']))}: {first['msg']}"))
                continue
            if contribution.id and contribution.id != contribution.content_id():
                bad.append((where, "malformed: id does not match the content (edited after the run?)"))
                continue
            good.append(contribution.with_id())
    return good, bad


def mad_outliers(values: Sequence[float], threshold: float = MAD_THRESHOLD) -> list[bool]:
    """Modified z-score (Iglewicz-Hoaglin) > threshold; too few values or zero spread: none."""
    if len(values) < 3:
        return [False] * len(values)
    median = statistics.median(values)
    mad = statistics.median(abs(v - median) for v in values)
    if mad == 0:
        return [v != median and abs(v - median) > 0.5 * abs(median) for v in values]
    return [0.6745 * abs(v - median) / mad > threshold for v in values]


def _key(params: dict[str, Any]) -> str:
    return json.dumps({k: params.get(k) for k in sorted(params)}, sort_keys=True)


#: one measured run: (submission id, tokens/s, TTFT ms or None, the combination's params)
_Sample = tuple[str, float, float | None, dict[str, Any]]


def _dedupe(contributions: Sequence[Contribution]) -> tuple[list[Contribution], list[tuple[str, str]]]:
    """Each submission once: a resubmitted file must not count twice in a median."""
    unique: list[Contribution] = []
    rejected: list[tuple[str, str]] = []
    seen: set[str] = set()
    for c in contributions:
        if c.id in seen:
            rejected.append((c.id, "duplicate submission"))
            continue
        seen.add(c.id)
        unique.append(c)
    return unique, rejected


def _one_target(
    unique: Sequence[Contribution], archetype: str | None, backend: str | None
) -> tuple[str, str, list[Contribution], list[tuple[str, str]]]:
    """The archetype and backend to merge (asked for, else the majority), their submissions, the rest rejected.

    Speeds from different machines or backends are not comparable, so one profile comes from one pair.
    """
    target_arch = archetype or Counter(c.archetype for c in unique).most_common(1)[0][0]
    pool = [c for c in unique if c.archetype == target_arch]
    target_backend = backend or Counter(c.backend for c in pool or unique).most_common(1)[0][0]
    kept: list[Contribution] = []
    rejected: list[tuple[str, str]] = []
    for c in unique:
        if c.archetype != target_arch or c.backend != target_backend:
            rejected.append((c.id, f"conflicting: {c.archetype}/{c.backend}, merging {target_arch}/{target_backend}"))
        else:
            kept.append(c)
    return target_arch, target_backend, kept, rejected


def _samples(kept: Sequence[Contribution]) -> dict[tuple[str, str], list[_Sample]]:
    """Successful runs grouped per (scenario, combination): what the medians are taken over."""
    samples: dict[tuple[str, str], list[_Sample]] = defaultdict(list)
    for c in kept:
        for run in c.runs:
            if run.ok and run.tokens_per_s:
                samples[(run.scenario, _key(run.params))].append((c.id, run.tokens_per_s, run.ttft_ms, run.params))
    return samples


def _outlier_submissions(
    kept: Sequence[Contribution], samples: dict[tuple[str, str], list[_Sample]]
) -> dict[str, float]:
    """Whole submissions whose speed is off (or zero) against the others, with that relative speed.

    Each submission's score is its median speed relative to each combination's median, so a slow
    machine mislabelled as this archetype stands out even if it measured other combinations.
    """
    medians = {k: statistics.median(s[1] for s in v) for k, v in samples.items()}
    scores = {
        c.id: statistics.median(
            [r.tokens_per_s / medians[(r.scenario, _key(r.params))] for r in c.runs if r.ok and r.tokens_per_s] or [0.0]
        )
        for c in kept
    }
    flags = mad_outliers(list(scores.values()))
    return {cid: score for (cid, score), flag in zip(scores.items(), flags, strict=True) if flag or score == 0.0}


def _clean_rows(rows: Sequence[_Sample], outliers: Iterable[str]) -> list[_Sample]:
    """One combination's samples without outlier submissions, then without outlier samples among the rest."""
    dropped = set(outliers)
    rows = [r for r in rows if r[0] not in dropped]
    return [r for r, out in zip(rows, mad_outliers([r[1] for r in rows]), strict=True) if not out]


def _combo_stats(rows: Sequence[_Sample]) -> ComboStats:
    """Median speed and TTFT of one combination's (non-empty) cleaned samples."""
    ttfts = [r[2] for r in rows if r[2] is not None]
    return ComboStats(
        params=rows[0][3],
        tokens_per_s=statistics.median(r[1] for r in rows),
        ttft_ms=statistics.median(ttfts) if ttfts else None,
        samples=len(rows),
        submissions=sorted({r[0] for r in rows}),
    )


def _best_per_scenario(
    samples: dict[tuple[str, str], list[_Sample]], outliers: Iterable[str], min_submissions: int
) -> dict[str, ComboStats]:
    """Per scenario, the fastest median among combinations enough submissions measured (ties: lower TTFT)."""
    best: dict[str, ComboStats] = {}
    for (scenario, _combo), raw in sorted(samples.items()):
        rows = _clean_rows(raw, outliers)
        if len({r[0] for r in rows}) < min_submissions:
            continue
        stats = _combo_stats(rows)
        current = best.get(scenario)
        if current is None or (stats.tokens_per_s, -(stats.ttft_ms or 0)) > (
            current.tokens_per_s,
            -(current.ttft_ms or 0),
        ):
            best[scenario] = stats
    return best


def _agreement(best: dict[str, ComboStats], kept: Sequence[Contribution]) -> dict[str, float]:
    """Per scenario, the share of submissions whose own fastest combination is the chosen one."""
    agreement = {}
    for scenario, stats in best.items():
        own = [_own_best(c, scenario) for c in kept]
        voted = [o for o in own if o is not None]
        agreement[scenario] = sum(o == _key(stats.params) for o in voted) / len(voted) if voted else 0.0
    return agreement


def merge(
    contributions: Sequence[Contribution],
    *,
    archetype: str | None = None,
    backend: str | None = None,
    min_submissions: int = 1,
    name: str = "community",
    version: int = 1,
    priority: int = 10,
    rejected: Sequence[tuple[str, str]] = (),
) -> MergeReport:
    """Curate contributions into a profile set with one profile (see the module docstring)."""
    unique, duplicates = _dedupe(contributions)
    rejected_out = [*rejected, *duplicates]
    if not unique:
        raise ValueError("no valid contributions to merge")
    target_arch, target_backend, kept, conflicting = _one_target(unique, archetype, backend)
    rejected_out += conflicting
    if not kept:
        raise ValueError(f"no contributions for {target_arch}/{target_backend}")
    samples = _samples(kept)
    outliers = _outlier_submissions(kept, samples)
    rejected_out += [(cid, f"outlier: speed {score:.2f}× the others' median") for cid, score in outliers.items()]
    kept = [c for c in kept if c.id not in outliers]
    if not kept:
        raise ValueError("every contribution was rejected")
    best = _best_per_scenario(samples, outliers, min_submissions)
    if not best:
        raise ValueError(f"no parameter combination was measured by at least {min_submissions} submissions")
    section = kept[0].section or "common"
    scenario = "chat-short" if "chat-short" in best else sorted(best)[0]
    profile_set = _to_profile_set(
        best[scenario], scenario, target_arch, section, name=name, version=version, priority=priority
    )
    return MergeReport(
        profile_set, target_arch, target_backend, [c.id for c in kept], rejected_out, best, _agreement(best, kept)
    )


def _own_best(c: Contribution, scenario: str) -> str | None:
    runs = [r for r in c.runs if r.ok and r.tokens_per_s and r.scenario == scenario]
    return _key(max(runs, key=lambda r: r.tokens_per_s or 0.0).params) if runs else None


def section_values(stats: ComboStats, section: str, source: str) -> dict[str, Any]:
    """The winning combination as ``{field: {value, source}}`` for a profile section."""
    out: dict[str, Any] = {}
    for knob, value in stats.params.items():
        if value is None:
            continue  # the backend could not honour it: nothing was measured
        for name in SECTION_FIELDS.get(section, SECTION_FIELDS["common"]).get(knob, ()):
            out[name] = {"value": value, "source": source}
    return out


def _to_profile_set(
    stats: ComboStats, scenario: str, archetype: str, section: str, *, name: str, version: int, priority: int
) -> ProfileSet:
    today = dt.date.today().isoformat()
    source = (
        f"community bench {today}: best median {stats.tokens_per_s:.1f} tok/s"
        + (f", TTFT {stats.ttft_ms:.0f} ms" if stats.ttft_ms is not None else "")
        + f" over {len(stats.submissions)} submission(s) [{', '.join(stats.submissions)}], scenario {scenario}"
    )
    profile = {
        section if section in SECTION_FIELDS else "common": section_values(stats, section, source),
        "submissions": stats.submissions,
        "label": f"merged from {len(stats.submissions)} submission(s)",
    }
    return load_profile_set(
        {
            "schema_version": SCHEMA_VERSION,
            "name": name,
            "version": version,
            "priority": priority,
            "published": today,
            "profiles": {archetype: profile},
        },
        origin="merged profile",
    )
