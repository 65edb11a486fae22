"""recall: conversation memory across conversations, local only.

- Saves every turn (user message + reply) of a conversation that has an id (``X-Conversation-Id`` /
  ``request.conversation_id``), committed before post_response returns. Stateless requests are
  searched but never saved (nothing ties their turns together, and a client that sends no id has
  not asked to be remembered).
- Recalls at most 3 memories (≤ 1,200 characters) scoring ≥ 0.38, vector or full-text alike, never
  from the same conversation, as one system message right after the system prompt. The query is the
  conversation's first user messages, so the block stays byte-stable across turns (prefix cache).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from autotune_core import ChatRequest, ChatResult, HookContext, Message, Plan, PluginHost, hookimpl
from autotune_core.config import data_dir

from .store import Hit, MemoryStore

log = logging.getLogger("autotune.recall")

__all__ = ["MemoryStore", "RecallPlugin"]

#: how long a store found empty is believed empty before looking again (seconds)
EMPTY_RECHECK_S = 10.0
PREFERRED_EMBEDDERS = (
    "nomic-embed-text",
    "mxbai-embed-large",
    "all-minilm",
    "snowflake-arctic-embed",
    "bge-m3",
    "embeddinggemma",
)


class RecallSettings(BaseModel):
    """``[plugins.recall]``."""

    model_config = ConfigDict(extra="forbid")

    inject: bool = True
    save: bool = True
    max_memories: int = Field(default=3, ge=0, le=10)
    max_chars: int = Field(default=1200, ge=100)
    min_score: float = Field(default=0.38, ge=0.0, le=1.0)
    #: embedding model on the active backend; None = the first preferred one installed, else the chat
    #: model itself when the backend can embed
    embedding_model: str | None = None
    embed_timeout: float = Field(default=10.0, gt=0)
    #: memories kept (oldest pruned first) and messages kept
    max_rows: int = Field(default=20_000, ge=10)
    max_messages: int = Field(default=200_000, ge=10)
    #: database file; None = data_dir()/memory.db
    path: str | None = None
    #: rows compared by vector per search (newest first); full-text search covers the rest
    scan_limit: int = Field(default=2000, ge=10)


def _age(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "just now"


def format_block(hits: list[Hit], max_chars: int, now: float | None = None) -> str:
    """The injected system message; the memories' text totals at most ``max_chars``."""
    now = time.time() if now is None else now
    lines = ["[Memories from earlier conversations, possibly relevant. Use them only if they help.]"]
    left = max_chars
    for hit in hits:
        if left <= 20:
            break
        text = hit.text
        if len(text) > left:
            cut = text[: left - 1].rsplit(" ", 1)[0]
            text = cut + "…"
        left -= len(text)
        lines.append(f"({_age(now - hit.created_at)}) {text}")
    lines.append("[End of memories]")
    return "\n".join(lines)


def query_of(messages: list[Message]) -> str:
    """The conversation's first ≤ 3 user messages (≤ 1,200 chars): stable for the whole conversation."""
    users: list[str] = []
    for m in messages:  # stops at the third: a long conversation costs no more than a short one
        if m.role == "user" and m.content.strip():
            users.append(m.content[:600])
            if len(users) == 3:
                break
    return "\n".join(users)[:1200]


class RecallPlugin:
    """Conversation memory in SQLite (WAL, FTS5), recall by embeddings with a full-text fallback."""

    name = "recall"
    Settings = RecallSettings

    def __init__(self) -> None:
        self._store: MemoryStore | None = None
        self._host: PluginHost | None = None
        self._embedder: dict[str, tuple[float, str | None]] = {}
        self._blocks: OrderedDict[str, str | None] = OrderedDict()
        #: monotonic time of the last check that found the store empty (None: not known to be empty)
        self._empty_since: float | None = None
        self.saved = 0
        self.injected = 0

    # -- plumbing ------------------------------------------------------------------------------------

    def settings_for(self, host: PluginHost | None) -> RecallSettings:
        return host.settings_of(RecallSettings) if host is not None else RecallSettings()

    def store(self, host: PluginHost | None = None) -> MemoryStore:
        """Opened on first use (or at start-up), in ``data_dir()/memory.db`` unless configured."""
        if self._store is None:
            settings = self.settings_for(host or self._host)
            path = settings.path or str(data_dir() / "memory.db")
            self._store = MemoryStore(path, max_rows=settings.max_rows, max_messages=settings.max_messages)
        return self._store

    @hookimpl
    async def on_startup(self, host: PluginHost) -> None:
        self._host = host
        await asyncio.to_thread(self.store, host)

    @hookimpl
    def on_shutdown(self, host: PluginHost) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    async def _embedding_model(self, ctx: HookContext, model: str, settings: RecallSettings) -> str | None:
        if settings.embedding_model:
            return settings.embedding_model
        cached = self._embedder.get(ctx.backend_name)
        if cached is not None and time.monotonic() - cached[0] < 300:
            return cached[1]
        choice: str | None = None
        try:
            names = [entry.name for entry in await ctx.host.backend(ctx.backend_name).list_models()]
            choice = next((n for pref in PREFERRED_EMBEDDERS for n in names if pref in n), None)
        except Exception as exc:
            log.debug("recall: listing models for embeddings failed: %s", exc)
        if choice is None and ctx.capabilities.can_embed:
            choice = model
        self._embedder[ctx.backend_name] = (time.monotonic(), choice)
        return choice

    async def embed(self, ctx: HookContext, model: str, text: str) -> tuple[str, list[float]] | None:
        """One vector from the active backend, or None (the caller falls back to full text)."""
        settings = self.settings_for(ctx.host)
        name = await self._embedding_model(ctx, model, settings)
        if name is None:
            return None
        try:
            result = await asyncio.wait_for(
                ctx.host.backend(ctx.backend_name).embed(name, [text[:8000]]), settings.embed_timeout
            )
        except Exception as exc:
            log.info(
                "recall: embeddings with %s on %s unavailable (%s); using full-text search",
                name,
                ctx.backend_name,
                type(exc).__name__,
            )
            self._embedder[ctx.backend_name] = (time.monotonic(), None)  # retried after 5 minutes
            return None
        if not result.vectors or not result.vectors[0]:
            return None
        return f"{ctx.backend_name}/{name}", result.vectors[0]

    # -- hooks -------------------------------------------------------------------------------------

    @hookimpl(tryfirst=True)
    async def pre_request(self, ctx: HookContext, request: ChatRequest, plan: Plan) -> None:
        """Early, so the compressor (last) counts the memory block inside the budget."""
        settings = self.settings_for(ctx.host)
        if not settings.inject or settings.max_memories == 0 or request.kind != "chat":
            return
        query = query_of(request.messages)
        if not query:
            return
        # the query itself keys a stateless request (≤ 1,200 chars × 512 entries): no digest per request
        key = request.conversation_id or "q:" + query
        if key in self._blocks:
            block = self._blocks[key]
            reason = "same memories as earlier in this conversation (stable prefix)"
        else:
            if await self._store_is_empty(ctx):
                block, reason = None, "no memories stored yet (no embedding call, no search)"
            else:
                block, reason = await self._search(ctx, request, query, settings)
            self._blocks[key] = block
            while len(self._blocks) > 512:
                self._blocks.popitem(last=False)
        if block is None:
            plan.record(self.name, "recall", None, 0, reason)
            return
        at = 0
        while at < len(plan.messages) and plan.messages[at].role in ("system", "developer"):
            at += 1
        before = len(plan.messages)
        plan.messages.insert(at, Message(role="system", content=block))
        self.injected += 1
        plan.record(self.name, "messages", before, len(plan.messages), reason)

    async def _store_is_empty(self, ctx: HookContext) -> bool:
        """An empty store (the usual state until a client sends conversation ids) costs no embedding call.

        Known-empty is re-checked every ``EMPTY_RECHECK_S`` (another process may have added memories);
        a save here clears it at once.
        """
        now = time.monotonic()
        if self._empty_since is not None and now - self._empty_since < EMPTY_RECHECK_S:
            return True
        empty = not await asyncio.to_thread(self.store(ctx.host).has_memories)
        self._empty_since = now if empty else None
        return empty

    async def _search(
        self, ctx: HookContext, request: ChatRequest, query: str, settings: RecallSettings
    ) -> tuple[str | None, str]:
        embedded = await self.embed(ctx, request.model, query)
        vector, model = (embedded[1], embedded[0]) if embedded else (None, None)
        store = self.store(ctx.host)
        hits = await asyncio.to_thread(
            store.search,
            query,
            vector=vector,
            embedding_model=model,
            exclude_conv=request.conversation_id,
            k=settings.max_memories * 3,
            min_score=0.0,
            scan_limit=settings.scan_limit,
        )
        present = "\n".join(m.content for m in request.messages)
        best = hits[0].score if hits else 0.0
        chosen = [
            h
            for h in hits
            if h.score >= settings.min_score and h.text.split("\n", 1)[0].removeprefix("User: ") not in present
        ][: settings.max_memories]
        if not chosen:
            return None, f"no memory scored ≥ {settings.min_score} (best {best:.2f})"
        vias = ",".join(sorted({h.via for h in chosen}))
        return (
            format_block(chosen, settings.max_chars),
            f"recalled {len(chosen)} memories (best {chosen[0].score:.2f} via {vias})",
        )

    @hookimpl
    async def post_response(self, ctx: HookContext, request: ChatRequest, plan: Plan, result: ChatResult) -> None:
        """Save the new user turn and the reply; awaited, so it is committed when the request is done."""
        settings = self.settings_for(ctx.host)
        if not settings.save or request.conversation_id is None or request.kind != "chat":
            return
        if result.finish_reason in (None, "error") or not result.content.strip():
            return  # an interrupted or failed answer is not a memory
        user = next((m.content for m in reversed(request.messages) if m.role == "user"), None)
        if not user:
            return
        system = next((m.content for m in request.messages if m.role == "system"), None)
        embedded = await self.embed(ctx, request.model, f"User: {user[:1000]}\nAssistant: {result.content[:2000]}")
        store = self.store(ctx.host)
        await asyncio.to_thread(
            store.add_turn,
            request.conversation_id,
            user,
            result.content,
            model=request.model,
            embedding=embedded[1] if embedded else None,
            embedding_model=embedded[0] if embedded else None,
            system_prompt=system,
        )
        self._empty_since = None
        self.saved += 1

    # -- CLI and routes -----------------------------------------------------------------------------

    @hookimpl
    def register_commands(self, cli: Any) -> None:
        from .cli import memory_group

        cli.add_command(memory_group(self))

    @hookimpl
    def register_routes(self, register: Any) -> None:
        from .routes import register_conversation_routes

        register_conversation_routes(self, register)

    @hookimpl
    def plugin_status(self) -> dict[str, Any]:
        """For ``/health`` and ``autotune status``."""
        return self.status()

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = {"saved_turns": self.saved, "injections": self.injected}
        if self._store is not None:
            data.update(self._store.stats())
        return data
