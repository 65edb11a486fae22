"""``autotune config``: where the file is, what is in effect, and a validated way to change it.

``set`` validates the whole would-be configuration (core keys and the plugin's own settings model)
before touching the file, and keeps the user's comments (tomlkit).
"""

from __future__ import annotations

import difflib
import json
import re
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from ..config import Settings
    from ..host import PluginHost

#: keys whose values never leave the machine in ``config show``
SECRET_KEY = re.compile(r"(^|_)(api_?key|key|token|secret|password)$", re.IGNORECASE)
REDACTED = "***"


def redact(data: Any) -> Any:
    """A copy with secret-looking values replaced (api_key, token, secret, password)."""
    if isinstance(data, dict):
        return {
            key: (REDACTED if SECRET_KEY.search(str(key)) and value not in (None, "") else redact(value))
            for key, value in data.items()
        }
    if isinstance(data, list):
        return [redact(item) for item in data]
    return data


def _host_or_none() -> PluginHost | None:
    from ..errors import AutotuneError
    from .common import get_host

    try:
        return get_host()
    except AutotuneError as exc:
        click.echo(f"warning: plugins unavailable, their settings are not shown: {exc.message}", err=True)
        return None


def effective_config(settings: Settings, host: PluginHost | None) -> dict[str, Any]:
    """The configuration as the file would spell it: ``[plugins.<name>]`` sections hold each loaded
    plugin's validated settings (defaults included)."""
    data = settings.model_dump(mode="json")
    plugins = data.pop("plugins")
    sections: dict[str, Any] = dict(plugins.pop("settings"))
    if host is not None:
        for name, record in host.records.items():
            if record.enabled and getattr(host.plugin(name), "Settings", None) is not None:
                sections[name] = host.plugin_settings(name).model_dump(mode="json")
    data["plugins"] = {**plugins, **dict(sorted(sections.items()))}
    return data


def _strip_none(data: dict[str, Any], prefix: str, unset: list[str]) -> dict[str, Any]:
    """TOML has no null: drop unset keys (listed in a comment) and put tables after plain values."""
    plain: dict[str, Any] = {}
    tables: dict[str, Any] = {}
    for key, value in data.items():
        if value is None:
            unset.append(prefix + key)
        elif isinstance(value, dict):
            tables[key] = _strip_none(value, f"{prefix}{key}.", unset)
        else:
            plain[key] = value
    return {**plain, **tables}


def to_toml(data: dict[str, Any], source: str) -> str:
    import tomlkit

    unset: list[str] = []
    body = tomlkit.dumps(_strip_none(data, "", unset))
    header = [f"# effective configuration from {source}"]
    if unset:
        header.append(f"# not set: {', '.join(unset)}")
    return "\n".join(header) + "\n\n" + body


@click.group("config")
def config_group() -> None:
    """Show the effective configuration, where the file is, or change one key."""


@config_group.command("path")
def path_cmd() -> None:
    """Print the config file's path ($AUTOTUNE_CONFIG or the platform config folder)."""
    from ..config import config_path

    click.echo(str(config_path()))


@config_group.command("show")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of TOML.")
def show(as_json: bool) -> None:
    """The effective configuration: file + AUTOTUNE_* environment + plugin defaults; secrets redacted."""
    from ..config import load_settings

    settings = load_settings()
    data = redact(effective_config(settings, _host_or_none()))
    if as_json:
        click.echo(json.dumps({"source": settings.source, "config": data}, indent=2))
    else:
        click.echo(to_toml(data, settings.source), nl=False)


def plugin_check(host: PluginHost, key: str) -> Any:
    """A ``write_setting`` check that validates ``plugins.<name>.<field>`` with the plugin's own model."""
    from pydantic import ValidationError

    from ..config import PluginsConfig
    from ..errors import ConfigError
    from .plugins_cmd import settings_model

    parts = key.split(".")
    if parts[0] != "plugins" or len(parts) < 2 or parts[1] in PluginsConfig.model_fields:
        return None
    name = parts[1]

    def check(settings: Settings) -> None:
        if name not in host.records:
            close = difflib.get_close_matches(name, list(host.records), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"cannot set {key!r} in {settings.source}: no plugin named {name!r}{hint}")
        model = settings_model(host, name)
        if model is None:
            raise ConfigError(f"cannot set {key!r} in {settings.source}: plugin {name!r} takes no settings")
        try:
            model.model_validate(settings.plugins.settings.get(name, {}))
        except ValidationError as exc:
            lines = [f"invalid settings for plugin {name!r} in {settings.source}:"]
            for item in exc.errors():
                field = ".".join(str(p) for p in item["loc"])
                lines.append(f"  plugins.{name}.{field}: {item['msg']} (got {item.get('input')!r})")
            raise ConfigError("\n".join(lines)) from None

    return check


@config_group.command("set")
@click.argument("key")
@click.argument("value")
def set_cmd(key: str, value: str) -> None:
    """Set KEY (dotted, e.g. server.port or plugins.ctx-sizing.max) to VALUE (a TOML literal:
    9000, true, "text", ["a", "b"]; bare words are strings). Validated before the file is written."""
    from ..config import Settings, config_path, parse_value, write_setting
    from ..host import PluginHost

    host = _host_or_none()
    if host is None:  # the current file is broken: a clean host still knows every plugin's model
        host = PluginHost(config=Settings(), env={})
    parsed = parse_value(value)
    path = config_path()
    write_setting(path, key, parsed, check=plugin_check(host, key))
    shown = REDACTED if SECRET_KEY.search(key.rsplit(".", 1)[-1]) else json.dumps(parsed)
    click.echo(f"set {key} = {shown} in {path}")


def register(cli: click.Group) -> None:
    """Adds ``autotune config`` to ``cli``."""
    cli.add_command(config_group)
