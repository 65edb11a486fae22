"""The Ollama front door on the same port: ``/api/chat``, ``/api/generate``, ``/api/tags``, ``/api/show``,
``/api/ps``, ``/api/version``, ``/api/embed`` and the legacy ``/api/embeddings``.

So the ``ollama`` SDK, Open WebUI or Continue pointed at autotune work unchanged.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..durations import parse_duration
from ..messages import ChatRequest
from . import ollama_models as models
from . import ollama_wire as wire
from .errors import SchemaError, validate
from .flow import Dialect, Encoder, error_response, handle, in_slot, ok, read_json
from .state import ServerState

OLLAMA_COMPAT_VERSION = models.OLLAMA_COMPAT_VERSION


def _chat_encoder(request: ChatRequest) -> Encoder:
    return wire.NdjsonEncoder(request.model, generate=False)


def _generate_encoder(request: ChatRequest) -> Encoder:
    return wire.NdjsonEncoder(request.model, generate=True)


CHAT = Dialect("ollama", "/api/chat", wire.chat_request, wire.chat_response, _chat_encoder)
GENERATE = Dialect("ollama", "/api/generate", wire.generate_request, wire.generate_response, _generate_encoder)


def routes(state: ServerState) -> list[Route]:
    started_iso = datetime.fromtimestamp(state.started_at, UTC).isoformat().replace("+00:00", "Z")

    def metadata(endpoint: Callable[[ServerState, str, Request], Awaitable[Response]]) -> Callable[..., Any]:
        async def serve(request: Request) -> Response:
            return await endpoint(state, started_iso, request)

        return serve

    async def chat(request: Request) -> Response:
        return await handle(state, request, CHAT)

    async def generate(request: Request) -> Response:
        model = await _unload_request(request)
        if model is not None:  # Ollama's own way to free a model now: an empty prompt with keep_alive 0
            return await _unload(state, model)
        return await handle(state, request, GENERATE)

    async def embed(request: Request) -> Response:
        endpoint = "/api/embed"
        try:
            body = validate(wire.EmbedBody, await read_json(request, state.config.max_body_bytes))
            inputs = [body.input] if isinstance(body.input, str) else list(body.input)
            if not inputs:
                raise SchemaError("input: must not be empty", param="input")
            backend, upstream = await state.resolve(body.model)
            started = time.perf_counter_ns()
            result = await in_slot(state, request, lambda: backend.embed(upstream, inputs))
            vectors = [v[: body.dimensions] if body.dimensions else v for v in result.vectors]
            return ok(
                state,
                "ollama",
                endpoint,
                {
                    "model": body.model,
                    "embeddings": vectors,
                    "total_duration": time.perf_counter_ns() - started,
                    "prompt_eval_count": result.prompt_tokens,
                },
            )
        except Exception as exc:
            return error_response(state, "ollama", endpoint, exc)

    async def embeddings(request: Request) -> Response:
        endpoint = "/api/embeddings"
        try:
            body = validate(wire.LegacyEmbeddingsBody, await read_json(request, state.config.max_body_bytes))
            backend, upstream = await state.resolve(body.model)
            result = await in_slot(state, request, lambda: backend.embed(upstream, [body.prompt]))
            return ok(state, "ollama", endpoint, {"embedding": result.vectors[0] if result.vectors else []})
        except Exception as exc:
            return error_response(state, "ollama", endpoint, exc)

    return [
        Route("/api/chat", chat, methods=["POST"]),
        Route("/api/generate", generate, methods=["POST"]),
        Route("/api/tags", metadata(models.tags), methods=["GET"]),
        Route("/api/show", metadata(models.show), methods=["POST"]),
        Route("/api/ps", metadata(models.ps), methods=["GET"]),
        Route("/api/version", metadata(models.version), methods=["GET"]),
        Route("/api/embed", embed, methods=["POST"]),
        Route("/api/embeddings", embeddings, methods=["POST"]),
    ]


#: an unload request is a few bytes; larger bodies are real generations and are read once, by ``handle``
_UNLOAD_PEEK_BYTES = 64 * 1024


async def _unload_request(request: Request) -> str | None:
    """The model an ``/api/generate`` body asks to unload (no prompt, ``keep_alive`` 0), else None."""
    declared = request.headers.get("content-length")
    if declared is None or not declared.isdigit() or int(declared) > _UNLOAD_PEEK_BYTES:
        return None
    try:
        data = json.loads(await request.body())  # cached by Starlette: handle() reads the same bytes again
    except (ValueError, RecursionError):  # not an unload request: handle() refuses it with the usual 400
        return None
    if not isinstance(data, dict) or data.get("prompt") or not isinstance(data.get("model"), str):
        return None
    keep_alive = data.get("keep_alive")
    if isinstance(keep_alive, bool) or not isinstance(keep_alive, str | int | float):
        return None  # absent, or a shape the generate path refuses with its own 400
    try:
        seconds = parse_duration(keep_alive)
    except ValueError:
        return None
    return str(data["model"]) if seconds == 0 else None


async def _unload(state: ServerState, model: str) -> Response:
    """Free the model on whichever backend serves it (the embedded worker ends; Ollama gets keep_alive 0)."""
    try:
        backend, upstream = await state.resolve(model)
        await backend.unload(upstream)
    except Exception as exc:
        return error_response(state, "ollama", "/api/generate", exc)
    return ok(
        state,
        "ollama",
        "/api/generate",
        {"model": model, "created_at": wire.now_iso(), "response": "", "done": True, "done_reason": "unload"},
    )
