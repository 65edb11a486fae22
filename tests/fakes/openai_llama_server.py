"""llama-server's own endpoints: ``/health``, ``/props``, ``/slots``, ``/metrics``, ``/tokenize``,
``/detokenize`` and the native ``/completion``."""

from __future__ import annotations

from typing import Any

from .openai_state import ApiError, Instance, Slot
from .tokens import pieces, token_id
from .wire import Request, Response, StreamResponse, dumps, json_response

__all__ = ["LlamaServerRoutes"]


class LlamaServerRoutes:
    """Mixin of :class:`fakes.fake_openai.FakeOpenAI` (flavour ``llama-server``)."""

    def _ls_instance(self) -> Instance:
        inst = next(iter(self.instances.values()), None)
        return inst if inst is not None else self._load(self.models[0], {}, jit=False, count=False)

    async def _ls_health(self, req: Request) -> Response:
        if self.loading:
            return json_response(
                {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}, status=503
            )
        return json_response({"status": "ok"})

    def _generation_settings(self, slot: Slot) -> dict[str, Any]:
        return {
            "id": slot.id,
            "id_task": -1,
            "n_ctx": slot.n_ctx,
            "speculative": False,
            "is_processing": False,
            "params": {
                "n_predict": -1,
                "temperature": 0.8,
                "top_k": 40,
                "top_p": 0.95,
                "min_p": 0.05,
                "n_keep": 0,
                "n_discard": 0,
                "seed": 4294967295,
                "stream": True,
                "cache_prompt": True,
            },
        }

    async def _ls_props(self, req: Request) -> Response:
        inst = self._ls_instance()
        return json_response(
            {
                "default_generation_settings": self._generation_settings(inst.slots[0]),
                "total_slots": len(inst.slots),
                "model_alias": inst.model.name,
                "model_path": self.model_path,
                "modalities": {"vision": False, "audio": False},
                "chat_template": "{% for message in messages %}...{% endfor %}",
                "bos_token": "<|begin_of_text|>",
                "eos_token": "<|eot_id|>",
                "build_info": self.build_info,
                "is_sleeping": False,
            }
        )

    async def _ls_slots(self, req: Request) -> Response:
        inst = self._ls_instance()
        out = []
        for s in inst.slots:
            entry = self._generation_settings(s)
            entry["next_token"] = [
                {
                    "has_next_token": False,
                    "has_new_line": False,
                    "n_remain": -1,
                    "n_decoded": 0,
                    "stopping_word": "",
                }
            ]
            out.append(entry)
        return json_response(out)

    async def _ls_metrics(self, req: Request) -> Response:
        if not self.metrics:
            return json_response(
                self.error_body(501, "This server does not support metrics endpoint. Start it with `--metrics`"),
                status=501,
            )
        st = self.stats
        values = {
            "prompt_tokens_total": ("counter", st["prompt_tokens_new"]),
            "prompt_seconds_total": ("counter", st["prompt_seconds"]),
            "tokens_predicted_total": ("counter", st["completion_tokens"]),
            "tokens_predicted_seconds_total": ("counter", st["predicted_seconds"]),
            "n_decode_total": ("counter", st["completion_tokens"]),
            "requests_processing": ("gauge", 0),
            "requests_deferred": ("gauge", 0),
            "n_tokens_max": (
                "counter",
                max((len(s.cache) for i in self.instances.values() for s in i.slots), default=0),
            ),
        }
        lines = []
        for key, (kind, value) in values.items():
            lines += [
                f"# HELP llamacpp:{key} {key}",
                f"# TYPE llamacpp:{key} {kind}",
                f"llamacpp:{key} {value}",
            ]
        return Response(body=("\n".join(lines) + "\n").encode(), content_type="text/plain; version=0.0.4")

    async def _ls_tokenize(self, req: Request) -> Response:
        try:
            body = self._body(req)
        except ApiError as exc:
            return json_response(exc.body, status=exc.status)
        content = body.get("content", "")
        ps = pieces(content if isinstance(content, str) else self._prompt_text(content))
        ids = [token_id(p) for p in ps]
        for i, p in zip(ids, ps, strict=True):
            self._vocab[i] = p
        if body.get("add_special"):
            ids = [1, *ids]
            ps = ["<|begin_of_text|>", *ps]
        if body.get("with_pieces"):
            return json_response({"tokens": [{"id": i, "piece": p} for i, p in zip(ids, ps, strict=True)]})
        return json_response({"tokens": ids})

    async def _ls_detokenize(self, req: Request) -> Response:
        try:
            body = self._body(req)
        except ApiError as exc:
            return json_response(exc.body, status=exc.status)
        ids = body.get("tokens") or []
        return json_response({"content": "".join(self._vocab.get(i, "") for i in ids if isinstance(i, int))})

    async def _ls_completion(self, req: Request) -> Response | StreamResponse:
        """Native ``/completion``: ``n_predict: 0`` only fills the cache (warm-up)."""
        try:
            body = self._body(req)
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
        out = res.output
        slot_id = 0 if not isinstance(body.get("id_slot"), int) else body["id_slot"]
        stop_type = "limit" if out.finish_reason == "length" else "eos"
        final = {
            "content": "" if body.get("stream") else out.text,
            "id_slot": slot_id,
            "stop": True,
            "model": res.model,
            "tokens_predicted": len(out.pieces),
            "tokens_evaluated": res.prompt_tokens,
            "generation_settings": {"n_ctx": inst.n_ctx},
            "truncated": False,
            "stop_type": stop_type,
            "stopping_word": "",
            "tokens_cached": (res.timings or {}).get("cache_n", 0) + len(out.pieces),
            "timings": res.timings,
        }
        if not body.get("stream"):
            return json_response(final)
        payloads = [
            b"data: " + dumps({"content": c, "stop": False, "id_slot": slot_id}) + b"\n\n"
            for c in self.chunk_texts(out.pieces)
        ]
        payloads.append(b"data: " + dumps(final) + b"\n\n")
        stream = StreamResponse(self.timed_events(payloads), content_type="text/event-stream")
        return self.apply_stream_failures(stream)
