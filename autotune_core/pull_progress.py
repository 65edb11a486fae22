"""The progress of ``autotune pull``, one shape for every source (Hugging Face or Ollama's ``/api/pull``).

:class:`PullEvent` is Ollama's progress line (``status``, ``digest``, ``total``, ``completed``), so the CLI
draws one progress bar whichever way a model arrives. A backend that can fetch models itself (Ollama)
implements :class:`Pullable`; the pull command asks the backend objects for it through the host.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from pydantic import BaseModel


class PullEvent(BaseModel):
    """One progress report: a status line, and for a file or layer its digest and byte counts."""

    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None


@runtime_checkable
class Pullable(Protocol):
    """A backend whose model server downloads models itself (``autotune pull --backend NAME``)."""

    def pull(self, model: str) -> AsyncIterator[PullEvent]:
        """Stream the server's progress; the last event has status ``success``. Failures raise
        :class:`~autotune_core.errors.UpstreamError` (or a subclass) with the server's message."""
        ...
