"""``autotune backends``, ``autotune models``, ``autotune ps``: what each backend can do, serve and holds."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from ..backend import KNOBS, Backend
from .common import echo_json, get_host, run, table

#: how long one backend may take to answer a CLI query
QUERY_TIMEOUT = 10.0


async def _describe(backend: Backend) -> dict[str, Any]:
    try:
        availability = await asyncio.wait_for(backend.available(), QUERY_TIMEOUT)
        ok, reason, version = availability.ok, availability.reason, availability.version
    except Exception as exc:  # a broken backend is reported, not fatal
        ok, reason, version = False, f"{type(exc).__name__}: {exc}", None
    caps = backend.capabilities()
    return {
        "name": backend.name,
        "label": backend.label,
        "reachable": ok,
        "reason": reason,
        "version": version,
        "dialect": caps.dialect,
        "flavour": getattr(backend, "flavour", None),
        "url": getattr(backend, "url", None),
        "can_tokenize": caps.can_tokenize,
        "can_embed": caps.can_embed,
        "knobs": {
            knob: {
                "scope": caps.scope(knob).value,
                "reloads": caps.knobs[knob].reloads if knob in caps.knobs else False,
                "how": caps.knobs[knob].how if knob in caps.knobs else "",
            }
            for knob in KNOBS
        },
    }


async def _each(func: Any) -> list[Any]:
    host = get_host()
    backends = [host.backend(name) for name in sorted(host.backend_classes)]
    try:
        return list(await asyncio.gather(*(func(b) for b in backends)))
    finally:
        for backend in backends:
            try:
                await backend.aclose()
            except Exception as exc:  # closing must not hide the answer
                click.echo(f"warning: closing {backend.name} failed: {exc}", err=True)


async def _models(backend: Backend) -> list[dict[str, Any]]:
    try:
        if not (await asyncio.wait_for(backend.available(), QUERY_TIMEOUT)).ok:
            return []
        return [m.model_dump() for m in await asyncio.wait_for(backend.list_models(), QUERY_TIMEOUT)]
    except Exception:
        return []


async def _loaded(backend: Backend) -> list[dict[str, Any]]:
    try:
        if not (await asyncio.wait_for(backend.available(), QUERY_TIMEOUT)).ok:
            return []
        return [m.model_dump() for m in await asyncio.wait_for(backend.loaded_models(), QUERY_TIMEOUT)]
    except Exception:
        return []


def _scope_cell(knob: dict[str, Any]) -> str:
    short = {"per_request": "request", "at_load": "load", "server_env": "server", "unsupported": "-"}
    return short[knob["scope"]] + ("*" if knob["reloads"] else "")


def _size(value: Any) -> str:
    return f"{value / 2**20:.0f} MiB" if isinstance(value, int | float) else ""


def register(cli: click.Group) -> None:
    """Adds ``backends``, ``models`` and ``ps`` to ``cli``."""

    @cli.command("backends")
    @click.option("--json", "as_json", is_flag=True, help="machine-readable output")
    def backends_command(as_json: bool) -> None:
        """Each registered backend: reachable, version, flavour and how it applies each knob."""
        described = run(_each(_describe))
        if as_json:
            echo_json(described)
            return
        rows = [
            [
                d["name"],
                "yes" if d["reachable"] else "no",
                d["version"] or "",
                d["flavour"] or "",
                *[_scope_cell(d["knobs"][k]) for k in KNOBS],
            ]
            for d in described
        ]
        click.echo(table(["backend", "up", "version", "flavour", *KNOBS], rows))
        click.echo("\nrequest = per request, load = at load (* reloads), server = server flags/env only, - = no")
        for d in described:
            if not d["reachable"] and d["reason"]:
                click.echo(f"{d['name']}: {d['reason']}")

    @cli.command("models")
    @click.option("--json", "as_json", is_flag=True, help="machine-readable output")
    def models_command(as_json: bool) -> None:
        """All models across the reachable backends."""
        models = [m for group in run(_each(_models)) for m in group]
        if as_json:
            echo_json(models)
            return
        rows = [
            [
                m["name"],
                m["backend"],
                _size(m["size_bytes"]),
                m["quantization"] or "",
                m["context_length"] or "",
                ", ".join(m["aliases"]),
            ]
            for m in models
        ]
        click.echo(table(["model", "backend", "size", "quant", "context", "aliases"], rows))
        for m in models:
            if m.get("note"):
                click.echo(f"\n{m['name']}: {m['note']}")

    @cli.command("ps")
    @click.option("--json", "as_json", is_flag=True, help="machine-readable output")
    def ps_command(as_json: bool) -> None:
        """Models loaded right now, with their context and KV type where known."""
        loaded = [m for group in run(_each(_loaded)) for m in group]
        if as_json:
            echo_json(loaded)
            return
        rows = [
            [
                m["name"],
                m["backend"],
                _size(m["size_bytes"]),
                m["context_length"] or "",
                m["kv_type"] or "",
                m["expires_at"] or "",
            ]
            for m in loaded
        ]
        click.echo(table(["model", "backend", "size", "context", "kv", "expires"], rows))
