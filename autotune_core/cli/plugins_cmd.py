"""``autotune plugins``: list, inspect, enable and disable plugins.

Everything shown comes from one :class:`~autotune_core.host.PluginHost` built the way the server
builds it (config file + environment), so what you see is what ``autotune serve`` would run.
Toggles are written to the config file's ``[plugins]`` table, keeping the user's comments.
"""

from __future__ import annotations

import difflib
import inspect
from importlib import metadata
from typing import TYPE_CHECKING, Any

import click

from ..plugin_report import hook_names, hook_order, plugins_report
from .common import echo_json, get_host, table

if TYPE_CHECKING:
    from pydantic import BaseModel

    from ..host import PluginHost, PluginRecord


def _placement(row: dict[str, Any]) -> str:
    bits = [row["stage"]] if "stage" in row else []
    bits += [flag for flag in ("tryfirst", "trylast") if row[flag]]
    return f" ({', '.join(bits)})" if bits else ""


def find_record(host: PluginHost, name: str) -> PluginRecord:
    """The record of ``name``, or a usage error with a did-you-mean suggestion."""
    record = host.records.get(name)
    if record is not None:
        return record
    close = difflib.get_close_matches(name, list(host.records), n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    known = ", ".join(sorted(host.records))
    raise click.UsageError(f"no plugin named {name!r}.{hint} Known plugins: {known}")


def plugin_object(host: PluginHost, name: str) -> Any:
    """The registered plugin, or (for a disabled/opt-in entry point) the object its entry point names,
    imported but not registered, so ``info`` and ``enable`` can read its tier and settings model."""
    plugin = host.plugin(name)
    if plugin is not None:
        return plugin
    record = host.records.get(name)
    if record is None or record.status == "error":
        return None
    if record.source == "config":
        from importlib import import_module

        module_name, _, attr = record.module.partition(":")
        obj: Any = import_module(module_name)
        for part in filter(None, attr.split(".")):
            obj = getattr(obj, part)
        return obj
    from ..markers import PROJECT

    for ep in metadata.entry_points(group=PROJECT, name=name):
        try:
            return ep.load()
        except Exception:
            return None
    return None


def settings_model(host: PluginHost, name: str) -> type[BaseModel] | None:
    obj = plugin_object(host, name)
    from pydantic import BaseModel

    model = getattr(obj, "Settings", None)
    return model if inspect.isclass(model) and issubclass(model, BaseModel) else None


def _type_name(annotation: Any) -> str:
    """``dict[str, int]``, ``int | None``: readable, without Annotated metadata."""
    import types
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(arg) for arg in args)
    if annotation is type(None):
        return "None"
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(_type_name(arg) for arg in args)}]"
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def settings_schema(model: type[BaseModel]) -> list[dict[str, Any]]:
    """One row per setting: key, type, default, description."""
    rows = []
    for key, field in model.model_fields.items():
        type_name = _type_name(field.annotation)
        default = None if field.is_required() else field.get_default(call_default_factory=True)
        rows.append(
            {
                "key": key,
                "type": type_name,
                "required": field.is_required(),
                "default": default,
                "description": field.description or "",
            }
        )
    return rows


def _current_settings(host: PluginHost, name: str) -> dict[str, Any]:
    model = settings_model(host, name)
    raw = host.config.plugins.settings.get(name, {})
    if model is None:
        return dict(raw)
    try:
        return model.model_validate(raw).model_dump(mode="json")
    except Exception as exc:  # shown, not raised: `info` is how you find out what is wrong
        return {"error": str(exc), "raw": raw}


def _short(items: list[str], limit: int = 40) -> str:
    text = ",".join(items)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def orphan_sections(host: PluginHost) -> list[str]:
    """Plugin names in the config or the environment that match no known plugin: usually a typo that
    silently does nothing (a ``[plugins.<name>]`` section, a toggle list, the server stack)."""
    known = list(host.records)

    def hint(name: str) -> str:
        close = difflib.get_close_matches(name, known, n=1)
        return f"; did you mean {close[0]!r}?" if close else ""

    plugins = host.config.plugins
    out = [
        f"[plugins.{name}] in {host.config.source} matches no installed plugin{hint(name)}"
        for name in sorted(plugins.settings)
        if name not in host.records
    ]
    lists = {
        "[plugins] disabled": plugins.disabled,
        "[plugins] enabled": plugins.enabled,
        "[server] plugins": host.config.server.plugins or [],
    }
    for var in ("AUTOTUNE_LOAD_PLUGINS", "AUTOTUNE_DISABLE_PLUGINS"):
        lists[var] = [n.strip() for n in host.env.get(var, "").split(",") if n.strip()]
    for where, names in lists.items():
        out += [
            f"{where} names {name!r}, which is not an installed plugin{hint(name)}"
            for name in names
            if name not in host.records
        ]
    return out


@click.group("plugins")
def plugins_group() -> None:
    """List, inspect, enable and disable plugins."""


@plugins_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--order", is_flag=True, help="Also print the call order of every hook.")
@click.option("--hook", "only_hook", default=None, help="Only plugins implementing this hook.")
def list_plugins(as_json: bool, order: bool, only_hook: str | None) -> None:
    """Every plugin the host knows: loaded, disabled, opt-in or broken, and the hook call order."""
    host = get_host()
    if only_hook is not None and only_hook not in hook_names():
        close = difflib.get_close_matches(only_hook, hook_names(), n=1)
        raise click.UsageError(f"no hook named {only_hook!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
    if as_json:
        echo_json(plugins_report(host, only_hook))
        return
    records = [r for r in host.records.values() if only_hook is None or only_hook in r.hooks]
    calls = hook_order(host)
    rows = []
    for r in records:
        note = r.reason or (f"{r.failures} failure(s): {r.last_failure}" if r.failures else "")
        rows.append(
            [
                r.name,
                r.version or "-",
                r.source,
                r.status,
                r.tier,
                _short(r.hooks),
                " ".join(f"{h.removeprefix('choose_')}:{p}" for h, p in r.fold_positions.items()) or "-",
                _short(r.registered, 30) or "-",
                note[:70],
            ]
        )
    click.echo(table(["NAME", "VERSION", "SOURCE", "STATUS", "TIER", "HOOKS", "FOLD", "REGISTERED", "NOTE"], rows))
    counts: dict[str, int] = {}
    for r in records:
        counts[r.status] = counts.get(r.status, 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    click.echo(f"\n{len(records)} plugins ({summary}); host built in {host.startup_ms:.1f} ms")
    for warning in orphan_sections(host):
        click.echo(f"warning: {warning}", err=True)
    if order:
        click.echo("\nHook call order:")
        for hook, rows_ in calls.items():
            chain = " → ".join(f"{row['plugin']}{_placement(row)}" for row in rows_) or "(no implementations)"
            click.echo(f"  {hook}: {chain}")


@plugins_group.command("info")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(name: str, as_json: bool) -> None:
    """Everything about one plugin: status, hooks and positions, settings schema and current values."""
    host = get_host()
    record = find_record(host, name)
    obj = plugin_object(host, name)
    model = settings_model(host, name)
    data = record.as_dict()
    data["doc"] = (inspect.getdoc(obj) or "") if obj is not None else ""
    data["settings_schema"] = settings_schema(model) if model is not None else []
    data["settings"] = _current_settings(host, name)
    data["config_section"] = f"[plugins.{name}]"
    data["calls"] = {
        hook: [row["position"] for row in rows if row["plugin"] == name]
        for hook, rows in hook_order(host).items()
        if any(row["plugin"] == name for row in rows)
    }
    if as_json:
        echo_json(data)
        return
    click.echo(f"{name} {record.version or ''}".rstrip())
    if data["doc"]:
        click.echo("\n" + data["doc"] + "\n")
    for label, key in (("source", "source"), ("module", "module"), ("status", "status"), ("tier", "tier")):
        click.echo(f"{label + ':':<12}{data[key]}")
    if record.reason:
        click.echo(f"{'reason:':<12}{record.reason}")
    if record.failures:
        click.echo(f"{'failures:':<12}{record.failures} (last: {record.last_failure})")
    calls = ", ".join(
        f"{hook} #{'/#'.join(map(str, pos))}"
        + (f" [{record.fold_positions[hook]}]" if hook in record.fold_positions else "")
        for hook, pos in data["calls"].items()
    )
    click.echo(f"{'hooks:':<12}{calls or ', '.join(record.hooks) or '-'}")
    click.echo(f"{'registered:':<12}{', '.join(record.registered) or '-'}")
    if data["settings_schema"]:
        click.echo(f"\nsettings ({data['config_section']} in the config file):")
        rows = [
            [
                s["key"],
                s["type"],
                "required" if s["required"] else repr(s["default"]),
                repr(data["settings"].get(s["key"])),
                s["description"],
            ]
            for s in data["settings_schema"]
        ]
        click.echo(table(["KEY", "TYPE", "DEFAULT", "CURRENT", "DESCRIPTION"], rows))
    else:
        click.echo("\nsettings: none")


def _env_note(host: PluginHost, name: str) -> str:
    notes = []
    if "AUTOTUNE_LOAD_PLUGINS" in host.env:
        notes.append("AUTOTUNE_LOAD_PLUGINS")
    if name in {n.strip() for n in host.env.get("AUTOTUNE_DISABLE_PLUGINS", "").split(",")}:
        notes.append("AUTOTUNE_DISABLE_PLUGINS")
    if not notes:
        return ""
    return f"\nnote: {' and '.join(notes)} in this environment still take precedence."


def _toggle(name: str, enable: bool) -> None:
    from ..config import config_path, read_toml, write_setting
    from ..host import ESSENTIAL

    host = get_host()
    record = find_record(host, name)
    if name in ESSENTIAL or record.tier == "essential":
        raise click.UsageError(f"plugin {name!r} is essential and cannot be {'enabled or ' if enable else ''}disabled.")
    path = config_path()
    table_ = read_toml(path).get("plugins", {})
    disabled = [n for n in table_.get("disabled", []) if n != name]
    enabled = [n for n in table_.get("enabled", []) if n != name]
    tier = record.tier
    if record.status == "disabled":  # blocked before import: ask the object itself
        tier = str(getattr(plugin_object(host, name), "tier", tier))
    if enable:
        if tier == "opt-in":
            enabled.append(name)
    else:
        disabled.append(name)
    was_on = name not in table_.get("disabled", []) and (tier != "opt-in" or name in table_.get("enabled", []))
    write_setting(path, "plugins.disabled", sorted(set(disabled)))
    if tier == "opt-in" or name in table_.get("enabled", []):
        write_setting(path, "plugins.enabled", sorted(set(enabled)))
    verb = "already " if was_on == enable else ""
    click.echo(f"{name} {verb}{'enabled' if enable else 'disabled'} (written to {path}){_env_note(host, name)}")


@plugins_group.command("enable")
@click.argument("name")
def enable(name: str) -> None:
    """Enable a plugin (removes it from [plugins] disabled; opt-in plugins are added to [plugins] enabled)."""
    _toggle(name, enable=True)


@plugins_group.command("disable")
@click.argument("name")
def disable(name: str) -> None:
    """Disable a plugin (adds it to [plugins] disabled in the config file). Essential plugins refuse."""
    _toggle(name, enable=False)


def register(cli: click.Group) -> None:
    """Adds ``autotune plugins`` to ``cli``."""
    cli.add_command(plugins_group)
