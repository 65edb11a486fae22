"""``/api/conversations``: create, list, get, delete, export as Markdown, in the original autotune's shapes
(docs/backend-facts.md#recall).

Database work runs in a worker thread so the event loop never waits on SQLite. Access control is the
server's (its API key applies to every route).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

if TYPE_CHECKING:
    from . import RecallPlugin
    from .store import MemoryStore

_FIELDS = ("model_id", "profile", "system_prompt", "title")


def _error(status: int, message: str, code: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": "invalid_request_error", "code": code}}, status_code=status
    )


async def _create_fields(request: Request) -> dict[str, Any] | JSONResponse:
    """The new conversation's fields from the body (empty body: none), or the 400 a bad body earns."""
    try:
        body: Any = await request.json() if await request.body() else {}
    except ValueError:
        return _error(400, "body must be JSON", "invalid_json")
    if not isinstance(body, dict):
        return _error(400, "body must be a JSON object", "invalid_json")
    fields = {key: body.get(key) for key in _FIELDS}
    if any(value is not None and not isinstance(value, str) for value in fields.values()):
        return _error(400, "model_id, profile, system_prompt and title must be strings", "invalid_field")
    return fields


async def _create(store: MemoryStore, request: Request) -> Response:
    """``POST /api/conversations``: 201 with the new id, or a 400 naming what is wrong with the body."""
    fields = await _create_fields(request)
    if isinstance(fields, JSONResponse):
        return fields
    conv_id = await asyncio.to_thread(
        store.create_conversation,
        model=fields["model_id"],
        profile=fields["profile"],
        system_prompt=fields["system_prompt"],
        title=fields["title"],
    )
    return JSONResponse(
        {"conversation_id": conv_id, "model_id": fields["model_id"], "profile": fields["profile"]}, status_code=201
    )


async def _list(store: MemoryStore, request: Request) -> Response:
    """``GET /api/conversations``: the newest ones, ``limit`` clamped to 1-500 (default 20)."""
    try:
        limit = max(1, min(500, int(request.query_params.get("limit", "20"))))
    except ValueError:
        return _error(400, "limit must be an integer", "invalid_limit")
    return JSONResponse({"conversations": await asyncio.to_thread(store.conversations, limit)})


def register_conversation_routes(plugin: RecallPlugin, register: Callable[..., None]) -> None:
    """Mount the conversation routes through the server's ``register`` (so its API key guards them)."""

    async def collection(request: Request) -> Response:
        store = plugin.store()
        if request.method == "POST":
            return await _create(store, request)
        return await _list(store, request)

    async def item(request: Request) -> Response:
        conv_id = request.path_params["conv_id"]
        store = plugin.store()
        if request.method == "DELETE":
            deleted = await asyncio.to_thread(store.delete_conversation, conv_id)
            if not deleted:
                return _error(404, f"conversation {conv_id!r} not found", "conversation_not_found")
            return JSONResponse({"deleted": conv_id})
        data = await asyncio.to_thread(store.conversation, conv_id)
        if data is None:
            return _error(404, f"conversation {conv_id!r} not found", "conversation_not_found")
        return JSONResponse(data)

    async def export(request: Request) -> Response:
        conv_id = request.path_params["conv_id"]
        markdown = await asyncio.to_thread(plugin.store().export_markdown, conv_id)
        if markdown is None:
            return _error(404, f"conversation {conv_id!r} not found", "conversation_not_found")
        if request.query_params.get("format") == "md":
            return PlainTextResponse(markdown, media_type="text/markdown; charset=utf-8")
        return JSONResponse({"markdown": markdown, "conversation_id": conv_id})

    register("/api/conversations", collection, methods=["GET", "POST"])
    register("/api/conversations/{conv_id}", item, methods=["GET", "DELETE"])
    register("/api/conversations/{conv_id}/export", export, methods=["GET"])
