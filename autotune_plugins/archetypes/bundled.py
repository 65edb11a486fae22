"""``archetype-profiles``: registers the profile sets this machine should use.

In order (later wins ties of priority): the bundled set shipped in ``profiles/bundled.toml``, the
downloaded set from the local cache (only when newer than the bundled one of the same name), and
the user's ``local.toml`` overlay. It also refreshes a stale cache at start-up when
``[archetypes] url`` is set, and contributes the ``profiles`` and ``bench`` commands (they manage
data, so they stay available when the ``auto-tune`` plugin is switched off).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from autotune_core.archetypes import ProfileSet, ProfileSetError, load_profile_set
from autotune_core.markers import hookimpl

from .cache import ProfileCache, archetypes_config

if TYPE_CHECKING:
    import click

    from autotune_core.host import PluginHost

log = logging.getLogger("autotune.archetypes")

PLUGIN_NAME = "archetype-profiles"


@cache
def bundled_set() -> ProfileSet:
    """The bundled set, parsed once per process."""
    text = resources.files(__package__).joinpath("profiles", "bundled.toml").read_text(encoding="utf-8")
    return load_profile_set(text, origin="bundled profiles (profiles/bundled.toml)", fmt="toml")


def sets_to_register(store: ProfileCache | None = None) -> list[ProfileSet]:
    """Bundled, then a newer cached download, then the local overlay; broken files are skipped."""
    store = store or ProfileCache()
    bundled = bundled_set()
    out = [bundled]
    remote = store.cached()
    if remote is not None:
        if remote.name == bundled.name and remote.version <= bundled.version:
            log.info(
                "cached %s v%s is not newer than the bundled v%s; ignored", remote.name, remote.version, bundled.version
            )
        else:
            out.append(remote)
    try:
        local = store.local()
    except ProfileSetError as exc:
        log.warning("ignoring the local archetype overlay: %s", exc.message)
        local = None
    if local is not None:
        out.append(local)
    return out


class BundledProfilesPlugin:
    """Bundled hardware-archetype profiles, the local cache/overlay, and ``autotune profiles``."""

    name = PLUGIN_NAME

    @hookimpl
    def register_archetypes(self, register: Callable[..., None]) -> None:
        for profile_set in sets_to_register():
            register(profile_set)

    @hookimpl
    async def on_startup(self, host: PluginHost) -> None:
        cfg = archetypes_config(host.config.archetypes)
        store = ProfileCache()
        if not cfg.url or not store.stale(cfg.refresh_hours):
            return
        result = await asyncio.to_thread(store.refresh, cfg.url, timeout=cfg.timeout)
        log.info("archetype profiles: %s", result.message)
        if result.status == "updated":
            replace_registered(host, sets_to_register(store))

    @hookimpl
    def register_commands(self, cli: click.Group) -> None:
        from .commands import add_commands

        add_commands(cli)


def replace_registered(host: PluginHost, sets: list[ProfileSet]) -> None:
    """Swap this plugin's registered sets after a refresh (other plugins' sets are untouched)."""
    kept: list[tuple[str, Any]] = [entry for entry in host.archetype_sets if entry[0] != PLUGIN_NAME]
    host.archetype_sets[:] = [(PLUGIN_NAME, s) for s in sets] + kept
