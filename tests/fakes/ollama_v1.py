"""The fake Ollama's OpenAI-compatible layer (``/v1/*``): it drops ``options``, ``keep_alive`` and any
unknown field, so it runs at the default context -- the behaviour the tuner must work around."""

from __future__ import annotations

from typing import Any

from .ollama_types import V1_CHAT_FIELDS, V1_COMPLETION_FIELDS, V1_EMBED_FIELDS, OllamaError
from .openai_shapes import (
    OpenAIResult,
    chat_completion_body,
    chat_completion_events,
    completion_body,
    completion_events,
    embeddings_body,
)
from .tokens import pieces, render_messages
from .wire import Request, Response, StreamResponse, dumps, json_response

__all__ = ["OllamaV1Routes"]


class OllamaV1Routes:
    """Mixin of :class:`fakes.fake_ollama.FakeOllama`: the ``/v1/*`` routes."""

    def _v1_error(self, status: int, message: str) -> Response:
        kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
        return json_response({"error": {"message": message, "type": kind, "param": None, "code": None}}, status)

    def _v1_options(self, body: dict[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
        for key in body:
            if key not in allowed:
                self.dropped_on_v1.append(key)
        opts: dict[str, Any] = {}
        for key in ("temperature", "top_p", "seed", "frequency_penalty", "presence_penalty"):
            if isinstance(body.get(key), int | float) and not isinstance(body.get(key), bool):
                opts[key] = body[key]
        stop = body.get("stop")
        if isinstance(stop, str):
            opts["stop"] = [stop]
        elif isinstance(stop, list):
            opts["stop"] = [s for s in stop if isinstance(s, str)]
        if isinstance(body.get("max_tokens"), int):
            opts["num_predict"] = body["max_tokens"]
        return opts

    async def _v1_generate(self, req: Request, *, chat: bool) -> Response | StreamResponse:
        try:
            body = self._body(req)
        except OllamaError as exc:
            return self._v1_error(exc.status, exc.message)
        opts = self._v1_options(body, V1_CHAT_FIELDS if chat else V1_COMPLETION_FIELDS)
        try:
            model = self._require_model(body)
            tools = body.get("tools") if chat else None
            self._capability_check(model, "chat" if chat else "generate", tools)
            if chat:
                if not isinstance(body.get("messages"), list) or not body["messages"]:
                    raise OllamaError(400, "[] is too short - 'messages'")
                prompt_text = render_messages(body["messages"], tools)
            else:
                prompt = body.get("prompt")
                prompt_text = prompt if isinstance(prompt, str) else "".join(map(str, prompt or []))
            rf = body.get("response_format")
            json_mode = isinstance(rf, dict) and rf.get("type") in ("json_object", "json_schema")
            kept = {k: v for k, v in body.items() if k in (V1_CHAT_FIELDS if chat else V1_COMPLETION_FIELDS)}
            _, _load_ns, prompt, out = await self._run(
                kept, model, prompt_text, opts, None, tools_offered=bool(tools), json_mode=json_mode
            )
        except OllamaError as exc:
            return self._v1_error(exc.status, exc.message)
        prompt_count = prompt.new if self.version_tuple == (0, 30, 0) else prompt.total
        result = OpenAIResult(
            model=str(body.get("model")),
            output=out,
            prompt_tokens=prompt_count,
            cached_tokens=None,
            system_fingerprint="fp_ollama",
        )
        streaming = bool(body.get("stream"))
        if not streaming:
            return json_response(chat_completion_body(result) if chat else completion_body(result))
        so = body.get("stream_options")
        include_usage = isinstance(so, dict) and bool(so.get("include_usage"))
        chunks = self.chunk_texts(out.pieces)
        payloads = (
            chat_completion_events(result, chunks, include_usage)
            if chat
            else completion_events(result, chunks, include_usage)
        )
        stream = StreamResponse(self.timed_events(payloads), content_type="text/event-stream")
        error_event = (
            b"data: "
            + dumps(
                {
                    "error": {
                        "message": "an error was encountered while running the model",
                        "type": "api_error",
                        "param": None,
                        "code": None,
                    }
                }
            )
            + b"\n\n"
        )
        return self.apply_stream_failures(stream, error_event)

    async def _v1_chat(self, req: Request) -> Response | StreamResponse:
        return await self._v1_generate(req, chat=True)

    async def _v1_completions(self, req: Request) -> Response | StreamResponse:
        return await self._v1_generate(req, chat=False)

    async def _v1_embeddings(self, req: Request) -> Response:
        try:
            body = self._body(req)
            self._v1_options(body, V1_EMBED_FIELDS)
            model = self._require_model(body)
            raw_input = body.get("input")
            if raw_input is not None and not isinstance(raw_input, str | list):
                raise OllamaError(400, "invalid input type")
            inputs = [raw_input] if isinstance(raw_input, str) else list(raw_input or [])
            if not inputs:
                raise OllamaError(400, "invalid input")
            _, loaded_now = self._schedule(model, {}, None, True)
            await self._load_wait(loaded_now)
        except OllamaError as exc:
            return self._v1_error(exc.status, exc.message)
        texts = [x if isinstance(x, str) else " ".join(map(str, x)) if isinstance(x, list) else str(x) for x in inputs]
        vectors = [self._vector(t, body.get("dimensions")) for t in texts]
        n_tokens = sum(len(pieces(t)) for t in texts)
        return json_response(embeddings_body(str(body.get("model")), vectors, n_tokens, body.get("encoding_format")))

    async def _v1_models(self, req: Request) -> Response:
        return json_response(
            {
                "object": "list",
                "data": [
                    {
                        "id": self._canonical(m.name),
                        "object": "model",
                        "created": 1_750_000_000,
                        "owned_by": "library",
                    }
                    for m in self.models
                ],
            }
        )
