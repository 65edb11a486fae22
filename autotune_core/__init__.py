"""autotune: a pluggy plugin host that tunes every request to a local LLM server.

Library use::

    from autotune_core import PluginHost, hookimpl

The names below are imported on first use (PEP 562), so ``import autotune_core.<module>`` (the CLI's
``--version``, the pytest plugin every pytest run loads) does not pay for pydantic and the host.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "AutotuneError": "errors",
    "RequestRejected": "errors",
    "Backend": "backend",
    "Capabilities": "backend",
    "KnobScope": "backend",
    "KnobSupport": "backend",
    "Choice": "context",
    "HookContext": "context",
    "StashKey": "context",
    "fold_stage": "context",
    "PluginHost": "host",
    "hookimpl": "markers",
    "hookspec": "markers",
    "ChatRequest": "messages",
    "ChatResult": "messages",
    "Message": "messages",
    "StreamChunk": "messages",
    "ModelInfo": "modelinfo",
    "Plan": "plan",
    "start": "server.launcher",
    "client_kwargs": "server.launcher",
}

__all__ = [
    "AutotuneError",
    "Backend",
    "Capabilities",
    "ChatRequest",
    "ChatResult",
    "Choice",
    "HookContext",
    "KnobScope",
    "KnobSupport",
    "Message",
    "ModelInfo",
    "Plan",
    "PluginHost",
    "RequestRejected",
    "StashKey",
    "StreamChunk",
    "__version__",
    "client_kwargs",
    "fold_stage",
    "hookimpl",
    "hookspec",
    "start",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'autotune_core' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from .backend import Backend, Capabilities, KnobScope, KnobSupport
    from .context import Choice, HookContext, StashKey, fold_stage
    from .errors import AutotuneError, RequestRejected
    from .host import PluginHost
    from .markers import hookimpl, hookspec
    from .messages import ChatRequest, ChatResult, Message, StreamChunk
    from .modelinfo import ModelInfo
    from .plan import Plan
    from .server.launcher import client_kwargs, start
