"""``autotune hardware``: what the machine is, its archetype, and every active archetype override.

Everything is resolved from ``host.hardware`` and ``host.archetype_sets`` through the core
contract (:mod:`autotune_core.archetypes`), so this works whichever plugins registered the sets.
"""

from __future__ import annotations

from typing import Any

import click

from ..archetypes import SECTIONS, Archetype, ProfileSet, Resolved, classify, profile_sets, resolve
from ..hardware import HardwareSnapshot
from .common import echo_json, get_host, table

APPLY_PLUGIN = "auto-tune"


def _snapshot_rows(snapshot: HardwareSnapshot) -> list[tuple[str, str]]:
    try:
        from ..hardware.detect import snapshot_to_table
    except ImportError:  # detection module absent: a minimal summary
        return [("OS", snapshot.os), ("CPU", snapshot.cpu.brand), ("RAM bytes", str(snapshot.ram_total_bytes))] + [
            ("GPU", f"{g.name} ({g.vendor})") for g in snapshot.gpus
        ]
    return snapshot_to_table(snapshot)


def _resolved_json(item: Resolved, archetype: str) -> dict[str, Any]:
    return {
        "knob": item.key,
        "value": item.value,
        "origin": item.origin.describe(archetype),
        "set": item.origin.set_name,
        "set_version": item.origin.set_version,
        "plugin": item.origin.plugin,
        "profile": item.origin.profile,
        "section": item.origin.section,
        "overlay": item.origin.overlay,
        "source": item.origin.source,
        "overrides": [{"value": value, "origin": origin.describe(archetype)} for value, origin in item.shadowed],
    }


def hardware_report(
    snapshot: HardwareSnapshot,
    registered: list[tuple[str, Any]],
    *,
    auto_tune: bool,
    sections: list[str],
    model: str | None,
) -> dict[str, Any]:
    """Everything ``autotune hardware --json`` prints (also used by tests)."""
    archetype: Archetype = classify(snapshot)
    sets, errors = profile_sets(registered)
    overrides = {
        name: [
            _resolved_json(item, archetype.id)
            for item in resolve(sets, archetype, section=name, model=model).values()
            if name == "common" or item.origin.section == name
        ]
        for name in sections
    }
    return {
        "hardware": snapshot.model_dump(mode="json"),
        "archetype": archetype.model_dump(mode="json") | {"lookup_keys": archetype.lookup_keys()},
        "auto_tune": "enabled" if auto_tune else "disabled",
        "profile_sets": [_set_json(plugin, s) for plugin, s in sets],
        "profile_set_errors": errors,
        "model": model,
        "overrides": overrides,
    }


def _set_json(plugin: str, profile_set: ProfileSet) -> dict[str, Any]:
    return {
        "plugin": plugin,
        "name": profile_set.name,
        "version": profile_set.version,
        "priority": profile_set.priority,
        "profiles": len(profile_set.profiles),
    }


def register(cli: click.Group) -> None:
    """Adds ``autotune hardware`` to ``cli``."""

    @cli.command("hardware")
    @click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
    @click.option(
        "--section",
        "sections",
        multiple=True,
        type=click.Choice(SECTIONS),
        help="Profile section(s) to show (default: all).",
    )
    @click.option("--model", default=None, help="Show the overrides for this model (per-model overlays).")
    def hardware(as_json: bool, sections: tuple[str, ...], model: str | None) -> None:
        """Show the detected hardware, its archetype and every active auto-tune override with its origin."""
        host = get_host()
        report = hardware_report(
            host.hardware,
            list(host.archetype_sets),
            auto_tune=host.enabled(APPLY_PLUGIN),
            sections=list(sections or SECTIONS),
            model=model,
        )
        if as_json:
            echo_json(report)
            return
        click.echo(table(["Hardware", ""], _snapshot_rows(host.hardware)))
        arch = report["archetype"]
        bandwidth = f"{arch['bandwidth_tier']}" + (
            f" ({arch['bandwidth_gbps']:g} GB/s)" if arch["bandwidth_gbps"] else ""
        )
        click.echo(
            "\n"
            + table(
                ["Archetype", arch["id"]],
                [
                    ("vendor / family / architecture", f"{arch['vendor']} / {arch['family']} / {arch['architecture']}"),
                    ("memory bucket", f"{arch['memory_gb']} GB {'unified' if arch['unified'] else 'discrete'}"),
                    ("bandwidth tier", bandwidth),
                    ("profile lookup", ", ".join(arch["lookup_keys"])),
                    (
                        "auto-tune",
                        report["auto_tune"]
                        + ("" if report["auto_tune"] == "enabled" else " (nothing below is applied)"),
                    ),
                ],
            )
        )
        click.echo(
            "\n"
            + table(
                ["Profile set", "plugin", "version", "priority", "profiles"],
                [(s["name"], s["plugin"], s["version"], s["priority"], s["profiles"]) for s in report["profile_sets"]],
            )
        )
        for error in report["profile_set_errors"]:
            click.echo(f"warning: {error}", err=True)
        rows = [
            (
                section,
                o["knob"],
                o["value"],
                o["origin"] + "".join(f"; overrides {x['value']!r} from {x['origin']}" for x in o["overrides"]),
            )
            for section, items in report["overrides"].items()
            for o in items
        ]
        click.echo("")
        if rows:
            click.echo(table(["Section", "Knob", "Value", "Origin"], rows))
        else:
            click.echo(f"No profile matches {arch['id']}: backends keep their own defaults.")
