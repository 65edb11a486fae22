"""autotune: a pluggy plugin host that tunes every request to a local LLM server.

Library use::

    from autotune_core import PluginHost, hookimpl
"""

from __future__ import annotations

from .backend import Backend, Capabilities, KnobScope, KnobSupport
from .context import Choice, HookContext, StashKey, fold_stage
from .errors import AutotuneError, RequestRejected
from .host import PluginHost
from .markers import hookimpl, hookspec
from .messages import ChatRequest, ChatResult, Message, StreamChunk
from .modelinfo import ModelInfo
from .plan import Plan

__version__ = "0.1.0"

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
    "fold_stage",
    "hookimpl",
    "hookspec",
]
