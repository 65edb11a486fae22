"""What ``autotune plugins list --json`` prints and ``GET /-/plugins`` serves: one report, built once here.

Kept out of the CLI so the server can serve it without importing click.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .host import PluginHost


def hook_names() -> list[str]:
    """Every hook of the contract, in the order of ``hookspecs.py``'s request path."""
    from . import hookspecs
    from .markers import PROJECT

    marker = f"{PROJECT}_spec"
    return [name for name, obj in vars(hookspecs).items() if callable(obj) and hasattr(obj, marker)]


def hook_order(host: PluginHost) -> dict[str, list[dict[str, Any]]]:
    """Per hook, the plugins in the order they are called, with stage and tryfirst/trylast."""
    from .hooks import FOLDS

    order: dict[str, list[dict[str, Any]]] = {}
    for hook in hook_names():
        rows = []
        for position, impl in enumerate(host.hook_impls(hook), start=1):
            row: dict[str, Any] = {
                "position": position,
                "plugin": impl.plugin,
                "tryfirst": impl.tryfirst,
                "trylast": impl.trylast,
            }
            if hook in FOLDS:
                row["stage"] = impl.stage
            rows.append(row)
        order[hook] = rows
    return order


def plugins_report(host: PluginHost, only_hook: str | None = None) -> dict[str, Any]:
    """Every plugin (loaded, disabled, opt-in or broken), the call order of every hook, the start-up time."""
    records = [r for r in host.records.values() if only_hook is None or only_hook in r.hooks]
    return {
        "plugins": [r.as_dict() for r in records],
        "hook_order": hook_order(host),
        "startup_ms": round(host.startup_ms, 2),
    }
