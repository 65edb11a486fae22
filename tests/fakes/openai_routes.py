"""The OpenAI endpoints every flavour serves (``/v1/chat/completions``, ``/v1/completions``,
``/v1/embeddings``, ``/v1/models``) and the generation core behind them: slots, prefix cache, context
errors in each flavour's wording, and usage/timings."""

from __future__ import annotations

from typing import Any

from .openai_shapes import (
    OpenAIResult,
    chat_completion_body,
    chat_completion_events,
    completion_body,
    completion_events,
    embeddings_body,
)
from .openai_state import ApiError, Instance, Slot
from .tokens import common_prefix_len, embed_text, pieces, render_messages
from .wire import Request, Response, StreamResponse, json_response

__all__ = ["OpenAIRoutes"]


class OpenAIRoutes:
    """Mixin of :class:`fakes.fake_openai.FakeOpenAI`: the common routes and request handling."""

    def _pick_slot(self, inst: Instance, toks: list[str], id_slot: Any) -> Slot:
        if isinstance(id_slot, int) and not isinstance(id_slot, bool) and 0 <= id_slot < len(inst.slots):
            return inst.slots[id_slot]
        best = max(inst.slots, key=lambda s: (common_prefix_len(s.cache, toks), -s.last_used))
        if common_prefix_len(best.cache, toks) == 0:
            best = min(inst.slots, key=lambda s: s.last_used)
        return best

    def _ctx_error(self, n_prompt: int, max_tokens: int | None, n_ctx: int) -> Response | None:
        f = self.flavour
        if f in ("llama-server", "lemonade"):
            if n_prompt >= n_ctx:
                return json_response(
                    {
                        "error": {
                            "code": 400,
                            "message": f"request ({n_prompt} tokens) exceeds the available context size "
                            f"({n_ctx} tokens), try increasing it",
                            "type": "exceed_context_size_error",
                            "n_prompt_tokens": n_prompt,
                            "n_ctx": n_ctx,
                        }
                    },
                    status=400,
                )
        elif f == "lmstudio":
            if n_prompt > n_ctx:
                return json_response(
                    {
                        "error": f"Trying to keep the first {n_prompt} tokens when context the overflows. "
                        "However, "
                        f"the model is loaded with context length of only {n_ctx} tokens, which is not "
                        "enough. Try to load the model with a larger context length, or provide a shorter "
                        "input"
                    },
                    status=400,
                )
        elif f == "vllm":
            want = n_prompt + (max_tokens or 0)
            if max_tokens and want > n_ctx:
                msg = (
                    f"This model's maximum context length is {n_ctx} tokens. However, you requested {want} "
                    f"tokens ({n_prompt} in the messages, {max_tokens} in the completion). Please reduce the "
                    "length of the messages or completion."
                )
                return json_response(self.error_body(400, msg), status=400)
            if n_prompt >= n_ctx:
                msg = (
                    f"This model's maximum context length is {n_ctx} tokens. However, your request has "
                    f"{n_prompt} input tokens. Please reduce the length of the input messages."
                )
                return json_response(self.error_body(400, msg), status=400)
        elif n_prompt + (max_tokens or 0) > n_ctx:
            return json_response(
                {
                    "error": {
                        "message": f"This model's maximum context length is {n_ctx} tokens. However, your "
                        f"messages resulted in {n_prompt} tokens. Please reduce the length of the "
                        "messages.",
                        "type": "invalid_request_error",
                        "param": "messages",
                        "code": "context_length_exceeded",
                    }
                },
                status=400,
            )
        return None

    def _vllm_cached(self, inst: Instance, toks: list[str], block: int = 16) -> int:
        best = max((common_prefix_len(p, toks) for p in inst.prefixes), default=0)
        if best >= len(toks):
            best = len(toks) - 1
        return (max(0, best) // block) * block

    def _generate(
        self,
        inst: Instance,
        prompt_text: str,
        body: dict[str, Any],
        *,
        max_tokens: int | None,
        stop: Any,
        json_mode: bool,
        tools_offered: bool,
    ) -> OpenAIResult | Response:
        toks = pieces(prompt_text)
        slot = self._pick_slot(inst, toks, body.get("id_slot"))
        err = self._ctx_error(len(toks), max_tokens, slot.n_ctx)
        if err is not None:
            return err
        if self.flavour == "vllm":
            cached = self._vllm_cached(inst, toks)
        else:
            cache_prompt = body.get("cache_prompt", True) is not False or self.flavour not in (
                "llama-server",
                "lemonade",
            )
            cached = common_prefix_len(slot.cache, toks) if cache_prompt else 0
            if cached >= len(toks) and cached > 0:
                cached = len(toks) - 1
        out = self.plan_output(
            body,
            max_tokens=max_tokens,
            stop=stop,
            json_mode=json_mode,
            tools_offered=tools_offered,
            room=slot.n_ctx - len(toks),
        )
        slot.cache = pieces(prompt_text + out.text)
        slot.last_used = next(self._use_counter)
        slot.n_requests += 1
        if self.flavour == "vllm":
            inst.prefixes = [toks, *inst.prefixes[:31]]
        new = len(toks) - cached
        prompt_ms = new * 1000.0 / self.prompt_tps
        predicted_ms = len(out.pieces) * 1000.0 / self.eval_tps
        st = self.stats
        st["requests"] += 1
        st["prompt_tokens"] += len(toks)
        st["prompt_tokens_new"] += new
        st["cached_tokens"] += cached
        st["completion_tokens"] += len(out.pieces)
        st["prompt_seconds"] += prompt_ms / 1000.0
        st["predicted_seconds"] += predicted_ms / 1000.0
        self.last_stats = {
            "time_to_first_token": round(prompt_ms / 1000.0, 6),
            "tokens_per_second": float(self.eval_tps),
            "input_tokens": len(toks),
            "output_tokens": len(out.pieces),
            "prompt_tokens": new,
            "cache_tokens": cached,
        }
        timings = None
        if self.flavour in ("llama-server", "lemonade"):
            n = len(out.pieces)
            timings = {
                "cache_n": cached,
                "prompt_n": new,
                "prompt_ms": prompt_ms,
                "prompt_per_token_ms": prompt_ms / new if new else 0.0,
                "prompt_per_second": float(self.prompt_tps),
                "predicted_n": n,
                "predicted_ms": predicted_ms,
                "predicted_per_token_ms": predicted_ms / n if n else 0.0,
                "predicted_per_second": float(self.eval_tps),
            }
        fingerprint = {"llama-server": self.build_info, "lemonade": self.build_info}.get(self.flavour)
        model_name = body.get("model") if isinstance(body.get("model"), str) else inst.model.name
        return OpenAIResult(
            model=model_name or inst.model.name,
            output=out,
            prompt_tokens=len(toks),
            cached_tokens=cached if self.report_cached_tokens else None,
            system_fingerprint=fingerprint,
            timings=timings,
        )

    @staticmethod
    def _max_tokens(body: dict[str, Any]) -> int | None:
        for key in ("max_completion_tokens", "max_tokens", "n_predict"):
            v = body.get(key)
            if isinstance(v, int) and not isinstance(v, bool):
                return v
        return None

    def _validate(self, body: dict[str, Any]) -> None:
        """Reject wrongly typed common fields with a 400, as the real servers' schema checks do."""
        checks: list[tuple[str, Any]] = [
            ("stream", bool),
            ("max_tokens", int),
            ("max_completion_tokens", int),
            ("n_predict", int),
            ("seed", int),
            ("temperature", int | float),
            ("stream_options", dict),
            ("response_format", dict),
            ("tools", list),
        ]
        for key, kind in checks:
            v = body.get(key)
            if v is not None and (not isinstance(v, kind) or (kind is not bool and isinstance(v, bool))):
                raise ApiError(400, self.error_body(400, f"Invalid type for '{key}'"))
        stop = body.get("stop")
        if stop is not None and not (
            isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(x, str) for x in stop))
        ):
            raise ApiError(400, self.error_body(400, "Invalid type for 'stop': expected a string or an array"))
        messages = body.get("messages")
        if isinstance(messages, list) and not all(isinstance(m, dict) and "role" in m for m in messages):
            raise ApiError(400, self.error_body(400, "Invalid 'messages': each message needs a 'role'"))

    def _body(self, req: Request) -> dict[str, Any]:
        try:
            body = req.json()
        except Exception as exc:
            raise ApiError(400, self.error_body(400, f"Invalid JSON: {exc}")) from exc
        if not isinstance(body, dict):
            raise ApiError(400, self.error_body(400, "request body must be a JSON object"))
        return body

    def _stream(self, payloads: list[bytes]) -> StreamResponse:
        stream = StreamResponse(
            self.timed_events(payloads),
            content_type="text/event-stream",
            headers=[("Cache-Control", "no-cache")],
        )
        return self.apply_stream_failures(stream)

    @staticmethod
    def _include_usage(body: dict[str, Any]) -> bool:
        so = body.get("stream_options")
        return isinstance(so, dict) and bool(so.get("include_usage"))

    # -- OpenAI endpoints -----------------------------------------------------------------------------------

    async def _chat(self, req: Request) -> Response | StreamResponse:
        try:
            body = self._body(req)
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                raise ApiError(400, self.error_body(400, "'messages' is required and must be a non-empty array"))
            self._validate(body)
            inst = await self._instance_for(body.get("model"), body)
        except ApiError as exc:
            return json_response(exc.body, status=exc.status)
        tools = body.get("tools")
        tools_offered = bool(tools) and body.get("tool_choice") != "none"
        rf = body.get("response_format")
        json_mode = isinstance(rf, dict) and rf.get("type") in ("json_object", "json_schema")
        res = self._generate(
            inst,
            render_messages(messages, tools),
            body,
            max_tokens=self._max_tokens(body),
            stop=body.get("stop"),
            json_mode=json_mode,
            tools_offered=tools_offered,
        )
        if isinstance(res, Response):
            return res
        if not body.get("stream"):
            return json_response(chat_completion_body(res))
        chunks = self.chunk_texts(res.output.pieces)
        return self._stream(chat_completion_events(res, chunks, self._include_usage(body)))

    @staticmethod
    def _prompt_text(prompt: Any) -> str:
        if isinstance(prompt, str):
            return prompt
        if isinstance(prompt, list):
            if all(isinstance(p, str) for p in prompt):
                return "".join(prompt)
            return " ".join(str(p) for p in prompt)
        return ""

    async def _completions(self, req: Request) -> Response | StreamResponse:
        try:
            body = self._body(req)
            if "prompt" not in body:
                raise ApiError(400, self.error_body(400, "'prompt' is required"))
            self._validate(body)
            inst = await self._instance_for(body.get("model"), body)
        except ApiError as exc:
            return json_response(exc.body, status=exc.status)
        res = self._generate(
            inst,
            self._prompt_text(body.get("prompt")),
            body,
            max_tokens=self._max_tokens(body),
            stop=body.get("stop"),
            json_mode=False,
            tools_offered=False,
        )
        if isinstance(res, Response):
            return res
        if not body.get("stream"):
            return json_response(completion_body(res))
        chunks = self.chunk_texts(res.output.pieces)
        return self._stream(completion_events(res, chunks, self._include_usage(body)))

    async def _embeddings(self, req: Request) -> Response:
        try:
            body = self._body(req)
            raw = body.get("input", body.get("content"))
            if raw is None or raw == [] or raw == "":
                raise ApiError(400, self.error_body(400, "'input' is required"))
            if not isinstance(raw, str | list):
                raise ApiError(400, self.error_body(400, "'input' must be a string or an array"))
            inst = await self._instance_for(body.get("model"), body)
        except ApiError as exc:
            return json_response(exc.body, status=exc.status)
        if isinstance(raw, str) or (isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw)):
            raw = [raw]
        texts = [x if isinstance(x, str) else " ".join(map(str, x)) if isinstance(x, list) else str(x) for x in raw]
        dims = body.get("dimensions")
        vectors = []
        for t in texts:
            vec = embed_text(t, self.embedding_dims)
            if isinstance(dims, int) and 0 < dims < len(vec):
                vec = vec[:dims]
                norm = sum(v * v for v in vec) ** 0.5 or 1.0
                vec = [v / norm for v in vec]
            vectors.append(vec)
        n_tokens = sum(len(pieces(t)) for t in texts)
        model = body.get("model") if isinstance(body.get("model"), str) else inst.model.name
        return json_response(embeddings_body(model or inst.model.name, vectors, n_tokens, body.get("encoding_format")))

    async def _models(self, req: Request) -> Response:
        f = self.flavour
        data = []
        for m in self.models:
            entry: dict[str, Any] = {"id": m.name, "object": "model", "created": 1_750_000_000}
            if f == "llama-server":
                if m is not self.models[0]:
                    continue
                entry["owned_by"] = "llamacpp"
                entry["meta"] = {
                    "vocab_type": 2,
                    "n_vocab": 128256,
                    "n_ctx_train": m.context_length,
                    "n_embd": m.embedding_length,
                    "n_params": m.parameter_count,
                    "size": m.size,
                }
            elif f == "vllm":
                entry.update(
                    {
                        "owned_by": "vllm",
                        "root": m.name,
                        "parent": None,
                        "max_model_len": min(self.n_ctx, m.context_length),
                        "permission": [],
                    }
                )
            elif f == "lmstudio":
                entry["owned_by"] = "organization_owner"
            elif f == "lemonade":
                entry.update(
                    {
                        "owned_by": "lemonade",
                        "checkpoint": f"unsloth/{m.name}:{m.quantization_level}",
                        "recipe": "llamacpp",
                        "downloaded": True,
                        "suggested": True,
                        "labels": ["embeddings"] if m.is_embedding_only else [],
                    }
                )
            else:
                entry["owned_by"] = "organization"
            data.append(entry)
        return json_response({"object": "list", "data": data})
