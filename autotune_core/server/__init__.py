"""The autotune proxy server: OpenAI and Ollama front doors over one plugin pipeline.

``create_app`` builds the ASGI app; ``launcher`` runs it (``autotune serve``) or starts it in the
background for library users (``autotune_core.start()``).
"""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
