""" "Learn from this run": save the best parameters a bench observed into the user's local overlay
(``data_dir()/archetypes/local.toml``), which the fallback chain uses with the highest priority and
shows as origin "local overlay".

By default the values become a *model overlay* for the benched model only (one model's best
batch size says little about another's); ``as_default`` makes them the archetype defaults.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import tomlkit

from autotune_core.archetypes import SCHEMA_VERSION, ProfileSet, dump_profile_set, load_profile_set

from .cache import ProfileCache, atomic_write
from .merge import merge, section_values
from .submission import Contribution

LOCAL_PRIORITY = 1000


def learned_values(contribution: Contribution) -> tuple[str, dict[str, Any], str]:
    """(section, {field: {value, source}}, summary) of the contribution's best combination."""
    report = merge([contribution], min_submissions=1, name="local")
    scenario = "chat-short" if "chat-short" in report.best else sorted(report.best)[0]
    stats = report.best[scenario]
    section = contribution.section or "common"
    summary = (
        f"{stats.tokens_per_s:.1f} tok/s"
        + (f", TTFT {stats.ttft_ms:.0f} ms" if stats.ttft_ms else "")
        + f" with {stats.params}"
    )
    source = (
        f"local overlay: learned from bench {contribution.id} on {contribution.timestamp[:10]} "
        f"({contribution.backend}, {contribution.model}): {summary}"
    )
    return section, section_values(stats, section, source), summary


def learn(contribution: Contribution, store: ProfileCache, *, as_default: bool = False) -> ProfileSet:
    """Merge the learned values into ``local.toml`` (validated, written atomically) and return it."""
    section, values, _summary = learned_values(contribution)
    current = store.local()
    data: dict[str, Any] = (
        dump_profile_set(current)
        if current is not None
        else {
            "schema_version": SCHEMA_VERSION,
            "name": "local",
            "version": 0,
            "priority": LOCAL_PRIORITY,
            "description": "Values learned on this machine (autotune profiles learn)",
            "profiles": {},
        }
    )
    data["version"] = int(data["version"]) + 1
    data["published"] = dt.date.today().isoformat()
    profile = data["profiles"].setdefault(contribution.archetype, {})
    if as_default:
        profile.setdefault(section, {}).update(values)
    else:
        overlays = profile.setdefault("overlays", [])
        mine = next((o for o in overlays if o.get("model") == contribution.model), None)
        if mine is None:
            mine = {"model": contribution.model}
            overlays.append(mine)
        mine.setdefault(section, {}).update(values)
    learned = load_profile_set(data, origin=str(store.local_path))
    atomic_write(store.local_path, to_toml(dump_profile_set(learned)))
    return learned


def to_toml(data: dict[str, Any]) -> str:
    """TOML with each ``{value, source}`` as an inline table, so the file stays readable."""

    def convert(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {"value", "source"}:
                inline = tomlkit.inline_table()
                inline.update(node)
                return inline
            return {key: convert(value) for key, value in node.items()}
        if isinstance(node, list):
            return [convert(item) for item in node]
        return node

    header = "# autotune local archetype overlay: highest priority. Written by `autotune profiles learn`.\n"
    return header + tomlkit.dumps(convert(data))
