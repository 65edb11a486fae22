"""The fake Ollama's native API: ``/api/chat``, ``/api/generate`` (NDJSON or one JSON object),
``/api/embed``, ``/api/embeddings``, ``/api/show``, ``/api/tags``, ``/api/ps``, ``/api/version`` and ``/``."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from .models import FakeModel
from .ollama_types import OllamaError
from .tokens import embed_text, pieces, render_messages, token_id
from .wire import Request, Response, StreamResponse, dumps, json_response

__all__ = ["OllamaNativeRoutes"]


def _ts(t: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if t is None else t, tz=UTC).isoformat().replace("+00:00", "Z")


class OllamaNativeRoutes:
    """Mixin of :class:`fakes.fake_ollama.FakeOllama`: the ``/api/*`` routes."""

    async def _api_chat(self, req: Request) -> Response | StreamResponse:
        try:
            return await self._chat_or_generate(req, chat=True)
        except OllamaError as exc:
            return json_response({"error": exc.message}, status=exc.status)

    async def _api_generate(self, req: Request) -> Response | StreamResponse:
        try:
            return await self._chat_or_generate(req, chat=False)
        except OllamaError as exc:
            return json_response({"error": exc.message}, status=exc.status)

    async def _chat_or_generate(self, req: Request, *, chat: bool) -> Response | StreamResponse:
        body = self._body(req)
        model = self._require_model(body)
        keep_alive = self._keep_alive(body)
        opts = self._check_options(body.get("options"))
        name_out = body.get("model") or body.get("name")
        tools = body.get("tools") if chat else None
        content_key = "message" if chat else "response"

        empty = not body.get("messages") if chat else not body.get("prompt")
        if empty:  # preload / unload
            if keep_alive == 0:
                self._unload(self._canonical(model.name), "keep_alive=0")
                reason = "unload"
            else:
                shift = body.get("shift")
                _, loaded_now = self._schedule(model, opts, keep_alive, True if shift is None else bool(shift))
                await self._load_wait(loaded_now)
                reason = "load"
            obj: dict[str, Any] = {"model": name_out, "created_at": _ts()}
            obj[content_key] = {"role": "assistant", "content": ""} if chat else ""
            obj.update({"done_reason": reason, "done": True})
            return json_response(obj)

        self._capability_check(model, "chat" if chat else "generate", tools)
        think = body.get("think")
        thinking_on = think is not None and think is not False
        if thinking_on and "thinking" not in model.capabilities:
            raise OllamaError(400, f'"{name_out}" does not support thinking')
        thinking = pieces(self.thinking_text) if thinking_on and self.thinking_text else []
        if chat:
            prompt_text = render_messages(body.get("messages"), tools)
        elif body.get("raw"):
            prompt_text = str(body.get("prompt", ""))
        else:
            system = body.get("system")
            prompt_text = (f"<|system|>\n{system}<|end|>\n" if system else "") + render_messages(
                [{"role": "user", "content": body.get("prompt", "")}]
            )
        json_mode = bool(body.get("format"))
        runner, load_ns, prompt, out = await self._run(
            body, model, prompt_text, opts, keep_alive, tools_offered=bool(tools), json_mode=json_mode
        )
        canonical = self._canonical(model.name)
        done_reason = "length" if out.finish_reason == "length" else "stop"
        metrics = self._metrics(load_ns, prompt, len(out.pieces) + len(thinking))
        tool_calls = self._ollama_tool_calls(out.tool_calls) if out.tool_calls else None
        final: dict[str, Any] = {"model": name_out, "created_at": ""}
        if chat:
            final["message"] = {"role": "assistant", "content": ""}
        else:
            final["response"] = ""
        final.update({"done": True, "done_reason": done_reason})
        if not chat and not body.get("raw"):
            final["context"] = [token_id(p) for p in runner.cache]
        final.update(metrics)

        if body.get("stream") is False:
            final["created_at"] = _ts()
            if chat:
                msg: dict[str, Any] = {"role": "assistant", "content": out.text}
                if thinking:
                    msg["thinking"] = "".join(thinking)
                if tool_calls:
                    msg["tool_calls"] = tool_calls
                final["message"] = msg
            else:
                final["response"] = out.text
                if thinking:
                    final["thinking"] = "".join(thinking)
            self._finish(canonical, keep_alive)
            return json_response(final)

        payloads: list[bytes] = []
        for text in self.chunk_texts(thinking):
            think_part: dict[str, Any] = {"model": name_out, "created_at": _ts()}
            if chat:
                think_part["message"] = {"role": "assistant", "content": "", "thinking": text}
            else:
                think_part.update({"response": "", "thinking": text})
            think_part["done"] = False
            payloads.append(dumps(think_part) + b"\n")
        for text in self.chunk_texts(out.pieces):
            part: dict[str, Any] = {"model": name_out, "created_at": _ts()}
            part[content_key] = {"role": "assistant", "content": text} if chat else text
            part["done"] = False
            payloads.append(dumps(part) + b"\n")
        if tool_calls:
            payloads.append(
                dumps(
                    {
                        "model": name_out,
                        "created_at": _ts(),
                        "message": {"role": "assistant", "content": "", "tool_calls": tool_calls},
                        "done": False,
                    }
                )
                + b"\n"
            )
        final["created_at"] = _ts()
        payloads.append(dumps(final) + b"\n")
        stream = StreamResponse(
            self.timed_events(payloads),
            content_type="application/x-ndjson",
            on_done=lambda: self._finish(canonical, keep_alive),
        )
        return self.apply_stream_failures(stream)

    # -- embeddings -----------------------------------------------------------------------------------------

    def _vector(self, text: str, dims: Any) -> list[float]:
        n = self.embedding_dims
        if isinstance(dims, int) and 0 < dims < n:
            vec = embed_text(text, n)[:dims]
            norm = sum(v * v for v in vec) ** 0.5 or 1.0
            return [v / norm for v in vec]
        return embed_text(text, n)

    async def _api_embed(self, req: Request) -> Response:
        try:
            body = self._body(req)
            model = self._require_model(body)
            keep_alive = self._keep_alive(body)
            opts = self._check_options(body.get("options"))
            raw_input = body.get("input")
            if raw_input is not None and not isinstance(raw_input, str | list):
                raise OllamaError(400, "invalid input type")
            inputs = [raw_input] if isinstance(raw_input, str) else list(raw_input or [])
            if not all(isinstance(x, str) for x in inputs):
                raise OllamaError(400, "invalid input type")
            runner, loaded_now = self._schedule(model, opts, keep_alive, True)
            load_ns = await self._load_wait(loaded_now)
            ctx = int(runner.options["num_ctx"])
            total = 0
            for text in inputs:
                n = len(pieces(text))
                if n > ctx and body.get("truncate") is False:
                    raise OllamaError(400, "the input length exceeds the context length")
                total += min(n, ctx)
            embeddings = [self._vector(t, body.get("dimensions")) for t in inputs]
            self._finish(self._canonical(model.name), keep_alive)
            prompt_ns = int(total * 1e9 / self.prompt_tps)
            return json_response(
                {
                    "model": body.get("model"),
                    "embeddings": embeddings,
                    "total_duration": load_ns + prompt_ns + 50_000,
                    "load_duration": load_ns,
                    "prompt_eval_count": total,
                }
            )
        except OllamaError as exc:
            return json_response({"error": exc.message}, status=exc.status)

    async def _api_embeddings(self, req: Request) -> Response:
        try:
            body = self._body(req)
            model = self._require_model(body)
            keep_alive = self._keep_alive(body)
            opts = self._check_options(body.get("options"))
            _, loaded_now = self._schedule(model, opts, keep_alive, True)
            await self._load_wait(loaded_now)
            prompt = body.get("prompt") or ""
            self._finish(self._canonical(model.name), keep_alive)
            return json_response({"embedding": self._vector(str(prompt), None) if prompt else []})
        except OllamaError as exc:
            return json_response({"error": exc.message}, status=exc.status)

    # -- introspection --------------------------------------------------------------------------------------

    def _details(self, model: FakeModel, *, with_lengths: bool = False) -> dict[str, Any]:
        family = model.family or model.architecture
        details: dict[str, Any] = {
            "parent_model": "",
            "format": "gguf",
            "family": family,
            "families": [family],
            "parameter_size": model.parameter_size,
            "quantization_level": model.quantization_level,
        }
        if with_lengths and self.is_v030:
            details["context_length"] = model.context_length
            details["embedding_length"] = model.embedding_length
        return details

    async def _root(self, req: Request) -> Response:
        return Response(body=b"Ollama is running", content_type="text/plain; charset=utf-8")

    async def _api_version(self, req: Request) -> Response:
        return json_response({"version": self.version})

    async def _api_show(self, req: Request) -> Response:
        try:
            body = self._body(req)
        except OllamaError as exc:
            return json_response({"error": exc.message}, status=exc.status)
        name = body.get("model") or body.get("name") or ""
        model = self.find_model(name)
        if model is None:
            return json_response({"error": f"model '{name}' not found"}, status=404)
        params = model.parameters_text()
        modelfile = f'# Modelfile generated by "ollama show"\nFROM {self._canonical(model.name)}\n'
        modelfile += f'TEMPLATE """{model.template}"""\n'
        modelfile += "".join(f"PARAMETER {line}\n" for line in params.splitlines())
        return json_response(
            {
                "license": "",
                "modelfile": modelfile,
                "parameters": params,
                "template": model.template,
                "details": self._details(model),
                "model_info": model.model_info(),
                "capabilities": list(model.capabilities),
                "modified_at": _ts(1_750_000_000),
            }
        )

    async def _api_tags(self, req: Request) -> Response:
        return json_response(
            {
                "models": [
                    {
                        "name": self._canonical(m.name),
                        "model": self._canonical(m.name),
                        "modified_at": _ts(1_750_000_000),
                        "size": m.size,
                        "digest": m.digest,
                        "details": self._details(m, with_lengths=True),
                        "capabilities": list(m.capabilities),
                    }
                    for m in self.models
                ]
            }
        )

    def _kv_bytes_per_elem(self) -> float:
        return {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 1.0625, "q4_0": 0.5625}.get(self.kv_cache_type, 2.0)

    async def _api_ps(self, req: Request) -> Response:
        self._expire()
        out = []
        for name, r in self.runners.items():
            size = r.model.size + r.model.kv_bytes(int(r.options["num_ctx"]), self._kv_bytes_per_elem())
            vram = 0 if r.options["num_gpu"] == 0 else int(size * self.vram_fraction)
            expires = datetime.now().astimezone() + timedelta(
                seconds=min(r.expires_at - time.time(), 292 * 365 * 86400.0)
            )
            out.append(
                {
                    "name": name,
                    "model": name,
                    "size": size,
                    "digest": r.model.digest,
                    "details": self._details(r.model),
                    "expires_at": expires.isoformat(),
                    "size_vram": vram,
                    "context_length": int(r.options["num_ctx"]),
                }
            )
        return json_response({"models": out})
