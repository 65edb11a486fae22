"""The ``openai`` backend plugin: any OpenAI-compatible server, flavour-aware (implementation in ``_openai``).

Flavours: llama-server, LM Studio, vLLM, Lemonade, generic; see ``_openai`` for what each honours.
"""

from __future__ import annotations

from typing import Any

from autotune_core.markers import hookimpl

from ._openai import FLAVOUR_KNOBS, FLAVOURS, PROBE_URLS, OpenAIBackend, OpenAISettings, lemonade_args

__all__ = [
    "FLAVOURS",
    "FLAVOUR_KNOBS",
    "PROBE_URLS",
    "OpenAIBackend",
    "OpenAIPlugin",
    "OpenAISettings",
    "lemonade_args",
]


class OpenAIPlugin:
    """OpenAI-compatible servers (llama-server, LM Studio, vLLM, Lemonade, generic) with per-flavour knobs."""

    @hookimpl
    def register_backends(self, register: Any) -> None:
        register(OpenAIBackend)
