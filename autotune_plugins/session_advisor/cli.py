"""``autotune status``: the running server's view if one answers, else a local reading."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from . import SessionAdvisorPlugin


def _server_health(host: Any) -> dict[str, Any] | None:
    import httpx

    server = host.config.server
    address = "127.0.0.1" if server.host in ("0.0.0.0", "::", "") else server.host
    headers = {"Authorization": f"Bearer {server.api_key}"} if server.api_key else {}
    try:
        response = httpx.get(f"http://{address}:{server.port}/health", headers=headers, timeout=1.5)
        data = response.json()
    except (httpx.HTTPError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _print(status: dict[str, Any]) -> None:
    click.echo(f"health: {status.get('score')}/100 ({status.get('label')}), state {status.get('state')}")
    for name, signal in (status.get("signals") or {}).items():
        click.echo(f"  {name:<11} {signal['level']:<8} {signal['detail']}")
    click.echo(f"recommended max concurrent: {status.get('recommended_concurrency')}")
    if status.get("context_ceiling"):
        click.echo(f"context ceiling: {status['context_ceiling']}")
    if status.get("kv_type_next_load"):
        click.echo(f"KV type at next load: {status['kv_type_next_load']}")
    for advice in status.get("advice") or []:
        click.echo(f"advice: {advice}")
    for action in status.get("recent_actions") or []:
        click.echo(f"action: {action['kind']}: {action['detail']} (why: {action['why']})")


def status_command(plugin: SessionAdvisorPlugin) -> click.Command:
    @click.command("status")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    @click.option("--local", is_flag=True, help="Do not ask a running server; sample this machine now.")
    def status(as_json: bool, local: bool) -> None:
        """Session health: score, state, recent actions and why (from the server if one runs)."""
        from autotune_core.cli.common import get_host

        host = get_host()
        remote = None if local else _server_health(host)
        if remote is not None:
            advisor = remote.get("session-advisor") or remote.get("plugins", {}).get("session-advisor")
            if as_json:
                click.echo(json.dumps(remote, indent=2, default=str))
                return
            click.echo(f"server: {remote.get('status', 'ok')} (version {remote.get('version', '?')})")
            if isinstance(advisor, dict):
                _print(advisor)
            return
        plugin.ensure(host)
        asyncio.run(_local(plugin))
        data = plugin.status()
        data["source"] = "local sample (no server answered)"
        if as_json:
            click.echo(json.dumps(data, indent=2, default=str))
            return
        click.echo("no server answered; sampling this machine")
        _print(data)

    return status


async def _local(plugin: SessionAdvisorPlugin) -> None:
    from .sampler import SystemSampler

    if plugin.sampler is None:
        plugin.sampler = SystemSampler()
    await asyncio.sleep(0.2)  # give psutil's CPU percentage a window
    await plugin.tick_once()
