"""Model resolution: which backend serves a model name, with aliases and Ollama's ``name:tag`` form."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from .errors import ModelNotFound
from .messages import ModelEntry

if TYPE_CHECKING:
    from .backend import Backend
    from .host import PluginHost

#: seconds a backend's availability and model list are reused
LIST_TTL = 10.0


def _variants(name: str) -> set[str]:
    """``llama3.2`` matches ``llama3.2:latest`` and vice versa; matching is case-insensitive."""
    lower = name.strip().lower()
    out = {lower}
    if lower.endswith(":latest"):
        out.add(lower[: -len(":latest")])
    elif ":" not in lower.rsplit("/", 1)[-1]:
        out.add(lower + ":latest")
    return out


class ModelResolver:
    """Finds the backend for a model; caches backend model lists briefly."""

    def __init__(self, host: PluginHost) -> None:
        self.host = host
        self._cache: dict[str, tuple[float, list[ModelEntry]]] = {}
        self._lock = asyncio.Lock()

    def candidates(self) -> list[str]:
        forced = self.host.config.backend
        if forced:
            return [forced]
        order = [name for name in self.host.config.backend_order if name in self.host.backend_classes]
        rest = sorted(name for name in self.host.backend_classes if name not in order)
        return order + rest

    async def models_of(self, name: str) -> list[ModelEntry]:
        now = time.monotonic()
        cached = self._cache.get(name)
        if cached is not None and now - cached[0] < LIST_TTL:
            return cached[1]
        backend = self.host.backend(name)
        try:
            availability = await backend.available()
            models = await backend.list_models() if availability.ok else []
        except Exception:
            models = []
        self._cache[name] = (now, models)
        return models

    def invalidate(self) -> None:
        self._cache.clear()

    async def all_models(self) -> list[ModelEntry]:
        lists = await asyncio.gather(*(self.models_of(name) for name in self.candidates()))
        return [entry for entries in lists for entry in entries]

    async def resolve(self, model: str) -> tuple[Backend, str]:
        """Return (backend, model name as that backend knows it)."""
        target = self.host.config.aliases.get(model, model)
        prefix, _, rest = target.partition("/")
        if rest and prefix in self.host.backend_classes:
            return self.host.backend(prefix), rest
        wanted = _variants(target)
        for name in self.candidates():
            for entry in await self.models_of(name):
                names = {entry.name, *entry.aliases}
                if any(_variants(candidate) & wanted for candidate in names):
                    return self.host.backend(name), entry.name
        available = sorted({entry.name for entry in await self.all_models()})
        raise ModelNotFound(model, available)
