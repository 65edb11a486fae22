"""``autotune chat``: a terminal chat through the same pipeline as the server (or a running server)."""

from .engine import LocalEngine, RemoteEngine, TurnStats, is_base_model, pick_default
from .history import ChatStore, Conversation, Turn

__all__ = [
    "ChatStore",
    "Conversation",
    "LocalEngine",
    "RemoteEngine",
    "Turn",
    "TurnStats",
    "is_base_model",
    "pick_default",
]
