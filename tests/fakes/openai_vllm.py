"""vLLM's extra endpoints: ``/health``, ``/version``, ``/metrics`` (``vllm:`` metrics) and ``/tokenize``."""

from __future__ import annotations

from .openai_state import ApiError
from .tokens import pieces, render_messages, token_id
from .wire import Request, Response, json_response

__all__ = ["VLLMRoutes"]


class VLLMRoutes:
    """Mixin of :class:`fakes.fake_openai.FakeOpenAI` (flavour ``vllm``)."""

    async def _vllm_health(self, req: Request) -> Response:
        return Response(body=b"", content_type="application/json")

    async def _vllm_version(self, req: Request) -> Response:
        return json_response({"version": self.server_version})

    async def _vllm_metrics(self, req: Request) -> Response:
        st = self.stats
        lines: list[str] = []
        for m in self.models:
            label = f'{{engine="0",model_name="{m.name}"}}'
            inst = self.instances.get(m.name)
            used = 0.0
            if inst is not None and inst.prefixes:
                used = min(1.0, len(inst.prefixes[0]) / max(1, inst.n_ctx))
            for key, kind, value in (
                ("num_requests_running", "gauge", 0.0),
                ("num_requests_waiting", "gauge", 0.0),
                ("kv_cache_usage_perc", "gauge", used),
                ("prefix_cache_queries_total", "counter", float(st["prompt_tokens"])),
                ("prefix_cache_hits_total", "counter", float(st["cached_tokens"])),
                ("prompt_tokens_total", "counter", float(st["prompt_tokens"])),
                ("generation_tokens_total", "counter", float(st["completion_tokens"])),
                ("request_success_total", "counter", float(st["requests"])),
            ):
                lines += [
                    f"# HELP vllm:{key} {key}",
                    f"# TYPE vllm:{key} {kind}",
                    f"vllm:{key}{label} {value}",
                ]
        return Response(body=("\n".join(lines) + "\n").encode(), content_type="text/plain; version=0.0.4")

    async def _vllm_tokenize(self, req: Request) -> Response:
        try:
            body = self._body(req)
        except ApiError as exc:
            return json_response(exc.body, status=exc.status)
        text = (
            render_messages(body["messages"])
            if isinstance(body.get("messages"), list)
            else self._prompt_text(body.get("prompt"))
        )
        ids = [token_id(p) for p in pieces(text)]
        return json_response(
            {
                "count": len(ids),
                "max_model_len": min(self.n_ctx, self.models[0].context_length),
                "tokens": ids,
                "token_strs": None,
            }
        )
