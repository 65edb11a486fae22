"""The structured benchmark contribution ``autotune bench --submit-file`` writes and ``profiles merge``
and ``profiles learn`` read. Close to Lemonade's bench JSON (docs/backend-facts.md#lemonade):
hardware summary, backend, model, per-run TTFT / tokens per second / peak memory, plus our archetype.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FORMAT = "autotune-bench/1"


class RunResult(BaseModel):
    """One measured run of one parameter combination."""

    model_config = ConfigDict(extra="forbid")

    #: the knobs as the backend really applied them (None where the backend cannot honour the knob)
    params: dict[str, Any]
    #: knob -> how the backend applies it (per_request, at_load, server_env, unsupported)
    honoured: dict[str, str] = Field(default_factory=dict)
    scenario: str = "chat-short"
    ttft_ms: float | None = Field(default=None, ge=0)
    tokens_per_s: float | None = Field(default=None, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    #: peak resident memory of this process while the run was in flight (in-process backends)
    peak_memory_bytes: int | None = Field(default=None, ge=0)
    wall_ms: float = Field(default=0.0, ge=0)
    ok: bool = True
    error: str = ""


class HardwareSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    os: str
    cpu: str
    cpu_arch: str
    ram_gb: float
    gpus: list[dict[str, Any]] = Field(default_factory=list)
    unified_memory: bool = False


class Contribution(BaseModel):
    """A benchmark submission from one machine."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["autotune-bench/1"] = "autotune-bench/1"
    id: str = ""
    archetype: str = Field(min_length=1)
    hardware: HardwareSummary
    backend: str = Field(min_length=1)
    #: the profile section the backend reads (embedded, llamacpp, ollama, ...); None: common only
    section: str | None = None
    backend_version: str | None = None
    model: str = Field(min_length=1)
    runs: list[RunResult] = Field(min_length=1)
    autotune_version: str
    timestamp: str
    budget_exhausted: bool = False

    def content_id(self) -> str:
        """A stable id from the content (so a resubmitted file is recognised as a duplicate)."""
        body = self.model_dump(mode="json", exclude={"id"})
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]

    def with_id(self) -> Contribution:
        return self.model_copy(update={"id": self.content_id()})
