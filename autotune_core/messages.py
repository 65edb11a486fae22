"""The one typed request every front door produces, and the result every backend returns.

OpenAI (``/v1/chat/completions``) and Ollama (``/api/chat``, ``/api/generate``) shapes are both
normalised into :class:`ChatRequest`; backends answer with :class:`ChatResult` or a stream of
:class:`StreamChunk`. Plugins only ever see these types, never a loose dict.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["system", "user", "assistant", "tool", "developer"]


class ToolCall(BaseModel):
    """A function call made by the model. ``arguments`` is kept as the JSON text OpenAI uses."""

    id: str | None = None
    name: str
    arguments: str = "{}"
    index: int | None = None

    def arguments_dict(self) -> dict[str, Any]:
        """The arguments as an object (Ollama's wire form); bad JSON becomes ``{}``."""
        try:
            value = json.loads(self.arguments or "{}")
        except json.JSONDecodeError:
            return {}
        return value if isinstance(value, dict) else {}


class Message(BaseModel):
    """One chat message. Text is flattened into ``content``; images travel beside it."""

    model_config = ConfigDict(extra="ignore")

    role: Role
    content: str = ""
    images: list[str] = Field(default_factory=list)
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None
    thinking: str | None = None


class ChatRequest(BaseModel):
    """A normalised chat or completion request."""

    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[Message] = Field(default_factory=list)
    kind: Literal["chat", "completion"] = "chat"
    prompt: str | None = None
    raw: bool = False
    stream: bool = False
    stream_include_usage: bool = False
    max_tokens: int | None = Field(default=None, ge=0)
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repeat_penalty: float | None = None
    tools: list[dict[str, Any]] = Field(default_factory=list)
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    think: bool | str | None = None
    keep_alive: str | float | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    conversation_id: str | None = None
    profile: str | None = None
    dialect: Literal["openai", "ollama", "library"] = "library"
    extra: dict[str, Any] = Field(default_factory=dict)

    def sampling(self) -> dict[str, Any]:
        """The sampling fields the client actually set (None means 'not sent')."""
        fields = (
            "temperature",
            "top_p",
            "top_k",
            "min_p",
            "seed",
            "presence_penalty",
            "frequency_penalty",
            "repeat_penalty",
        )
        return {name: getattr(self, name) for name in fields if getattr(self, name) is not None}


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Timings(BaseModel):
    """Where the time went, in milliseconds, as far as the backend tells us."""

    load_ms: float | None = None
    prompt_ms: float | None = None
    decode_ms: float | None = None
    ttft_ms: float | None = None
    total_ms: float | None = None
    reloaded: bool = False

    def tokens_per_second(self, completion_tokens: int) -> float | None:
        if not self.decode_ms or completion_tokens <= 0:
            return None
        return completion_tokens / (self.decode_ms / 1000.0)


class ChatResult(BaseModel):
    """A complete (non-streaming) answer, also assembled at the end of a stream for post_response."""

    model: str
    backend: str = ""
    content: str = ""
    thinking: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    finish_reason: str | None = "stop"
    usage: Usage = Field(default_factory=Usage)
    timings: Timings = Field(default_factory=Timings)
    raw: dict[str, Any] = Field(default_factory=dict)
    #: what autotune changed against the client's explicit values, and why (the plan's warnings)
    warnings: list[str] = Field(default_factory=list)


class StreamChunk(BaseModel):
    """One piece of a streamed answer. The last chunk has ``done=True`` with usage and timings."""

    content: str = ""
    thinking: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    done: bool = False
    finish_reason: str | None = None
    usage: Usage | None = None
    timings: Timings | None = None
    #: on the final chunk: the plan's warnings (see ChatResult.warnings)
    warnings: list[str] = Field(default_factory=list)


class ModelEntry(BaseModel):
    """A model a backend can serve (``autotune models``, ``/v1/models``, ``/api/tags``)."""

    name: str
    backend: str
    size_bytes: int | None = None
    family: str | None = None
    parameter_size: str | None = None
    quantization: str | None = None
    context_length: int | None = None
    modified_at: str | None = None
    digest: str | None = None
    aliases: list[str] = Field(default_factory=list)
    #: what a user should know before using it (e.g. "base model, not for chat"); shown by models and /api/show
    note: str | None = None
    #: the model server's own entry, verbatim (Ollama's ``/api/tags`` item), for doors that pass it through
    upstream: dict[str, Any] | None = Field(default=None, exclude=True, repr=False)


class LoadedModel(BaseModel):
    """A model resident in a backend (``autotune ps``, ``/api/ps``)."""

    name: str
    backend: str
    size_bytes: int | None = None
    size_vram_bytes: int | None = None
    context_length: int | None = None
    kv_type: str | None = None
    expires_at: str | None = None
    #: the model server's own entry, verbatim (Ollama's ``/api/ps`` item)
    upstream: dict[str, Any] | None = Field(default=None, exclude=True, repr=False)
