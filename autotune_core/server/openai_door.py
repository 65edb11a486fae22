"""The OpenAI front door: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``, ``/v1/models``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..messages import ChatRequest, ModelEntry
from . import openai_wire as wire
from .errors import SchemaError
from .flow import Dialect, Encoder, error_response, handle, in_slot, ok, read_json
from .state import ServerState


def _chat_encoder(request: ChatRequest) -> Encoder:
    return wire.ChatStreamEncoder(request.model, request.stream_include_usage)


def _completion_encoder(request: ChatRequest) -> Encoder:
    return wire.ChatStreamEncoder(request.model, request.stream_include_usage, completion=True)


CHAT = Dialect("openai", "/v1/chat/completions", wire.chat_request, wire.chat_response, _chat_encoder)
COMPLETIONS = Dialect(
    "openai", "/v1/completions", wire.completion_request, wire.completion_response, _completion_encoder
)


def _model_card(entry: ModelEntry, created: int) -> dict[str, object]:
    return {"id": entry.name, "object": "model", "created": created, "owned_by": entry.backend}


def routes(state: ServerState) -> list[Route]:
    created = int(state.started_at)

    async def chat(request: Request) -> Response:
        return await handle(state, request, CHAT)

    async def completions(request: Request) -> Response:
        return await handle(state, request, COMPLETIONS)

    async def embeddings(request: Request) -> Response:
        endpoint = "/v1/embeddings"
        try:
            body = wire.embeddings_request(await read_json(request, state.config.max_body_bytes))
            inputs = [body.input] if isinstance(body.input, str) else list(body.input)
            if not inputs:
                raise SchemaError("input: must not be empty", param="input")
            backend, upstream = await state.resolve(body.model)
            result = await in_slot(state, request, lambda: backend.embed(upstream, inputs))
            vectors = [vector[: body.dimensions] if body.dimensions else vector for vector in result.vectors]
            return ok(
                state,
                "openai",
                endpoint,
                wire.embeddings_response(vectors, body.model, result.prompt_tokens, body.encoding_format),
            )
        except Exception as exc:
            return error_response(state, "openai", endpoint, exc)

    async def models(request: Request) -> Response:
        entries = await state.pipeline.resolver.all_models()
        seen: set[str] = set()
        data = []
        for entry in entries:
            if entry.name not in seen:
                seen.add(entry.name)
                data.append(_model_card(entry, created))
        return ok(state, "openai", "/v1/models", {"object": "list", "data": data})

    async def model(request: Request) -> Response:
        name = request.path_params["model"]
        try:
            backend, _upstream = await state.resolve(name)
        except Exception as exc:
            return error_response(state, "openai", "/v1/models/{model}", exc)
        entry = ModelEntry(name=name, backend=backend.name)
        return ok(state, "openai", "/v1/models/{model}", _model_card(entry, created))

    return [
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{model:path}", model, methods=["GET"]),
    ]
