"""The autotune proxy server: OpenAI and Ollama front doors over one plugin pipeline.

``create_app`` builds the ASGI app; :mod:`.launcher` runs it (``autotune serve``) or starts it in
the background for library users (``autotune_core.start()``). Imports are lazy so that
``autotune_core.start()`` does not pay for Starlette in the calling process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
