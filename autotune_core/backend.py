"""The backend plugin API: what a model server can do, and how a Plan becomes a wire request.

A backend declares, per knob, *how* it can be honoured (docs/backend-facts.md#knob-scopes):

- ``per_request``: can change on every call without a reload;
- ``at_load``: fixed when the model is loaded; a change means a reload (``reloads=True``);
- ``server_env``: only the server's environment/flags can set it: we give advice instead;
- ``unsupported``: no way to set it.

The core uses this to annotate the plan's trace (:func:`reconcile_plan`), so a knob the
backend cannot honour is never sent as if it could.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel

from .messages import ChatRequest, ChatResult, LoadedModel, ModelEntry, StreamChunk
from .modelinfo import ModelInfo
from .plan import Plan


class KnobScope(StrEnum):
    PER_REQUEST = "per_request"
    AT_LOAD = "at_load"
    SERVER_ENV = "server_env"
    UNSUPPORTED = "unsupported"


#: The knobs every backend must classify.
KNOBS: tuple[str, ...] = ("num_ctx", "kv_type", "flash_attn", "num_batch", "keep_alive", "num_keep", "parallel")


class KnobSupport(BaseModel):
    scope: KnobScope
    reloads: bool = False
    #: how to set it when the scope is server_env (e.g. "OLLAMA_KV_CACHE_TYPE")
    how: str = ""


class Capabilities(BaseModel):
    """What a backend honours, per knob, and which extra services it offers."""

    dialect: str
    knobs: dict[str, KnobSupport]
    can_tokenize: bool = False
    can_embed: bool = False
    prefix_cache: bool = True

    def scope(self, knob: str) -> KnobScope:
        support = self.knobs.get(knob)
        return support.scope if support else KnobScope.UNSUPPORTED

    def honours(self, knob: str) -> bool:
        return self.scope(knob) in (KnobScope.PER_REQUEST, KnobScope.AT_LOAD)


class Availability(BaseModel):
    ok: bool
    reason: str = ""
    version: str | None = None


class EmbeddingResult(BaseModel):
    vectors: list[list[float]]
    prompt_tokens: int = 0
    model: str = ""


class Backend(abc.ABC):
    """Base class for backend plugins. Instances are per host; all I/O is async."""

    #: short name used in config (``[backends.<name>]``) and in ``autotune backends``
    name: ClassVar[str]
    #: a human label for tables
    label: ClassVar[str] = ""

    #: the model of ``[backends.<name>]``; the base class validates it (errors name each key) into ``self.config``
    Settings: ClassVar[type[BaseModel] | None] = None

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        self.settings: dict[str, Any] = dict(settings or {})
        if self.Settings is not None:
            from .config import validate_section

            self.config: Any = validate_section(
                self.Settings, self.settings, section=f"backends.{self.name}", label=f"backend {self.name!r}"
            )
        #: number of model reloads this backend caused or observed
        self.reloads = 0

    @abc.abstractmethod
    def capabilities(self) -> Capabilities:
        """Per-knob scopes. Must not do I/O (call :meth:`refresh` first if they depend on the server)."""

    def parallel_slots(self) -> int | None:
        """How many requests the model server runs at once, when it says so (llama-server's ``/props``
        ``total_slots``, vLLM's ``max_num_seqs``, ...); None = unknown. No I/O: learnt in :meth:`refresh`.

        The server's admission queue keeps that many requests in flight plus a small lookahead, so a
        batching server never idles a slot waiting for the proxy to hand the next request over.
        """
        return None

    async def refresh(self) -> None:  # noqa: B027 - optional hook for subclasses
        """Learn facts that shape capabilities (server version, flavour). Called on start-up."""

    @abc.abstractmethod
    async def available(self) -> Availability:
        """Whether the backend can serve now, and if not, why."""

    @abc.abstractmethod
    async def list_models(self) -> list[ModelEntry]: ...

    @abc.abstractmethod
    async def model_info(self, model: str) -> ModelInfo: ...

    @abc.abstractmethod
    async def chat(self, request: ChatRequest, plan: Plan) -> ChatResult:
        """A non-streaming chat/completion honouring the plan's knobs as the capabilities say."""

    @abc.abstractmethod
    def stream_chat(self, request: ChatRequest, plan: Plan) -> AsyncIterator[StreamChunk]:
        """A streaming chat; the last chunk has ``done=True`` with usage and timings.

        Closing the iterator (client gone) must cancel the upstream request.
        """

    async def embed(self, model: str, inputs: list[str]) -> EmbeddingResult:
        raise NotImplementedError(f"backend {self.name!r} does not offer embeddings")

    async def loaded_models(self) -> list[LoadedModel]:
        return []

    async def native_show(self, model: str, *, verbose: bool = False) -> dict[str, Any] | None:
        """The model server's own ``/api/show`` answer, verbatim, where it speaks Ollama's API; else None.

        Clients read fields autotune does not know (modelfile, template, license, every ``model_info``
        key), so a door that can pass them through does so instead of describing the model itself.
        """
        return None

    async def unload(self, model: str) -> bool:
        return False

    async def version(self) -> str | None:
        return None

    async def self_test(self) -> Availability | None:
        """A deeper check than :meth:`available`, for ``autotune doctor`` (e.g. an embedded engine generating
        one token in a throwaway process, to catch a build that crashes on this CPU). None: nothing to add."""
        return None

    async def count_tokens(self, model: str, request: ChatRequest, plan: Plan) -> int | None:
        """Exact prompt tokens with the model's own tokenizer and template, or None if unknown."""
        return None

    def wire_options(self, plan: Plan, request: ChatRequest | None = None) -> dict[str, Any]:
        """The knobs of ``plan`` this backend would send (with the client's own ``request`` fields where
        given), for tests and ``autotune plan``."""
        return {}

    async def aclose(self) -> None:  # noqa: B027 - optional hook for subclasses
        """Release connections, threads and loaded models."""


_UNSUPPORTED = KnobSupport(scope=KnobScope.UNSUPPORTED)


#: (knob, scope as written in plan.applied, whether it is sent, how to set it otherwise), per Capabilities
_Row = tuple[str, str, bool, KnobScope, str]
_TABLES: dict[int, tuple[Capabilities, dict[str, KnobSupport], tuple[_Row, ...]]] = {}


def _table(caps: Capabilities) -> tuple[_Row, ...]:
    """Each knob's support, read once per Capabilities object (backends return the same one per request)."""
    found = _TABLES.get(id(caps))
    if found is not None and found[0] is caps and found[1] is caps.knobs:
        return found[2]
    rows = []
    for knob in KNOBS:
        support = caps.knobs.get(knob) or _UNSUPPORTED
        sent = support.scope in (KnobScope.PER_REQUEST, KnobScope.AT_LOAD)
        rows.append((knob, support.scope.value, sent, support.scope, support.how))
    if len(_TABLES) >= 64:
        _TABLES.clear()
    table = tuple(rows)
    _TABLES[id(caps)] = (caps, caps.knobs, table)
    return table


def reconcile_plan(plan: Plan, caps: Capabilities, *, backend: str) -> None:
    """Record in the trace how each decided knob will really be applied by this backend.

    Knobs the backend cannot honour are cleared from the plan (so nobody sends them) and, where
    a server setting could achieve the same, turned into advice.
    """
    for knob, applied, sent, scope, how in _table(caps):
        value = getattr(plan, knob, None)
        if value is None:
            continue
        plan.applied[knob] = applied
        if sent:
            continue
        if scope is KnobScope.SERVER_ENV:
            hint = how or f"the {backend} server's start-up flags"
            plan.advise(f"{knob}={value} cannot be set per request on {backend}; set {hint}", knob=knob)
        elif how:  # unsupported through the API, but the user may have another way
            plan.advise(f"{knob}={value} cannot be set through {backend}'s API; {how}", knob=knob)
        plan.record("core", knob, value, None, f"{backend} cannot honour {knob} ({applied}); not sent")
        setattr(plan, knob, None)


BackendFactory = type[Backend]
RegisteredBackends = dict[str, BackendFactory]

__all__ = [
    "KNOBS",
    "Availability",
    "Backend",
    "BackendFactory",
    "Capabilities",
    "EmbeddingResult",
    "KnobScope",
    "KnobSupport",
    "RegisteredBackends",
    "reconcile_plan",
]
