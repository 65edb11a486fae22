"""``autotune serve`` (run the proxy) and ``autotune status`` (ask a running one how it is)."""

from __future__ import annotations

import sys
from typing import Any

import click


@click.command("serve")
@click.option("--host", default=None, help="Address to bind (default: [server] host, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default: [server] port, 8765).")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Config file (default: the platform config path or $AUTOTUNE_CONFIG).",
)
@click.option("--profile", default=None, help="Tuning profile: fast, balanced or quality.")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
def serve(host: str | None, port: int | None, config_path: str | None, profile: str | None, log_level: str) -> None:
    """Run the OpenAI- and Ollama-compatible proxy in the foreground."""
    from ..server.launcher import serve as run_server
    from ..server.launcher import settings_for

    run_server(settings_for(config_path, profile), host=host, port=port, log_level=log_level)


@click.command("status")
@click.option("--host", default=None)
@click.option("--port", type=int, default=None)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print /health as JSON.")
def status(host: str | None, port: int | None, config_path: str | None, as_json: bool) -> None:
    """Ask a running server for its health: backends, queue, pressure. Exit code 1 if none answers."""
    from ..server.launcher import connect_host, health, settings_for
    from .common import echo_json

    settings = settings_for(config_path)
    base = f"http://{connect_host(host or settings.server.host)}:{port or settings.server.port}"
    data = health(base, settings.server.api_key, timeout=2.0)
    if data is None:
        click.echo(f"no autotune server answers on {base}", err=True)
        sys.exit(1)
    if as_json:
        echo_json(data)
        return
    click.echo(f"{base}: {data['status']}" + (f" (autotune {data['version']})" if "version" in data else ""))
    for backend in data.get("backends", []):
        mark = "✓" if backend["available"] else "✗"
        click.echo(f"  {mark} {backend['name']}" + ("" if backend["available"] else f"  ({backend['reason']})"))
    queue = data.get("queue")
    if queue:
        slots = f" (server slots: {queue['backend_slots']})" if queue.get("backend_slots") else ""
        click.echo(
            f"  queue: {queue['active']}/{queue.get('limit', queue['max_concurrent'])} active{slots}, "
            f"{queue['queued']}/{queue['max_queued']} waiting"
        )
    pressure = data.get("pressure")
    if pressure:
        click.echo(f"  memory pressure: {pressure['tier']}")
    for name, report in (data.get("plugins") or {}).items():
        _echo_plugin_status(name, report)


def _echo_plugin_status(name: str, report: Any) -> None:
    """One plugin's ``status()``: scalars on one line, then lists (recent actions, advice) item by item."""
    if not isinstance(report, dict):
        click.echo(f"  {name}: {report}")
        return
    scalars = ", ".join(
        f"{key}={value}"
        for key, value in report.items()
        if isinstance(value, str | int | float | bool) and value not in ("", None)
    )
    click.echo(f"  {name}: {scalars}")
    for key, value in report.items():
        if isinstance(value, list) and value:
            for item in value[-5:]:
                text = ", ".join(f"{k}={v}" for k, v in item.items()) if isinstance(item, dict) else str(item)
                click.echo(f"    {key}: {text}")


def register(cli: click.Group) -> None:
    """Adds ``serve`` and ``status`` to ``cli``."""
    cli.add_command(serve)
    cli.add_command(status)
