"""Lemonade's management API: ``/api/v1/health``, ``/load``, ``/unload`` and ``/stats``."""

from __future__ import annotations

import shlex

from .openai_state import ApiError
from .wire import Request, Response, json_response

__all__ = ["LemonadeRoutes"]

_LEMONADE_MANAGED_FLAGS = frozenset(
    {
        "-m",
        "--model",
        "--port",
        "-c",
        "--ctx-size",
        "-ngl",
        "--n-gpu-layers",
        "--gpu-layers",
        "--jinja",
        "--mmproj",
        "--embeddings",
        "--embedding",
        "--reranking",
        "--rerank",
    }
)


class LemonadeRoutes:
    """Mixin of :class:`fakes.fake_openai.FakeOpenAI` (flavour ``lemonade``)."""

    async def _lem_health(self, req: Request) -> Response:
        self._expire()
        loaded = []
        for i, inst in enumerate(self.instances.values()):
            m = inst.model
            ctx_total = inst.n_ctx * len(inst.slots)
            args = str(inst.config.get("llamacpp_args") or "")
            port = 8001 + i
            launch = f"llama-server -m /models/{m.name}.gguf --ctx-size {ctx_total} --port {port}"
            launch += " --jinja --metrics"
            loaded.append(
                {
                    "model_name": m.name,
                    "checkpoint": f"unsloth/{m.name}:{m.quantization_level}",
                    "recipe": "llamacpp",
                    "recipe_options": dict(inst.config),
                    "launch_command": f"{launch} {args}".strip(),
                    "backend_url": f"http://127.0.0.1:{8001 + i}/v1",
                    "pid": 40000 + i,
                    "device": "gpu",
                    "pinned": bool(inst.config.get("pinned", False)),
                    "is_busy": False,
                    "type": "embedding" if m.is_embedding_only else "llm",
                }
            )
        last = next(reversed(self.instances), None) if self.instances else None
        return json_response(
            {
                "status": "ok",
                "version": self.server_version,
                "model_loaded": last,
                "all_models_loaded": loaded,
                "max_models": {"llm": 1, "embedding": 1, "reranking": 1, "audio": 1, "image": 1},
            }
        )

    async def _lem_load(self, req: Request) -> Response:
        try:
            body = self._body(req)
        except ApiError as exc:
            return json_response(exc.body, status=exc.status)
        name = body.get("model_name")
        if not name:
            return json_response(self.error_body(400, "model_name is required"), status=400)
        m = self.find_model(name)
        if m is None:
            return json_response(self.error_body(404, f"Model not found: {name}"), status=404)
        config = self._default_config(m)
        if "ctx_size" in body:
            ctx = body["ctx_size"]
            if not isinstance(ctx, int) or isinstance(ctx, bool):
                return json_response(self.error_body(400, "ctx_size must be an integer"), status=400)
            config["ctx_size"] = ctx if ctx > 0 else -1
        for key in ("llamacpp_backend", "llamacpp_args"):
            if key in body:
                config[key] = str(body[key])
        try:
            flags = shlex.split(str(config["llamacpp_args"]))
        except ValueError as exc:
            return json_response(self.error_body(400, f"llamacpp_args: {exc}"), status=400)
        managed = [f for f in flags if f in _LEMONADE_MANAGED_FLAGS]
        if managed:
            return json_response(
                self.error_body(400, f"llamacpp_args may not contain {managed[0]}: it is managed by Lemonade"),
                status=400,
            )
        if body.get("pinned"):
            config["pinned"] = True
        old = self.instances.get(m.name)
        if old is None or old.config != config:
            self._load(m, config, jit=False)
            await self._sleep_load()
        return json_response({"status": "success", "message": f"Loaded model: {m.name}"})

    async def _lem_unload(self, req: Request) -> Response:
        try:
            body = self._body(req) if req.body.strip() else {}
        except ApiError as exc:
            return json_response(exc.body, status=exc.status)
        name = body.get("model_name")
        if name:
            m = self.find_model(name)
            if m is None or not self._unload(m.name, "api"):
                return json_response(self.error_body(404, f"Model not loaded: {name}"), status=404)
            return json_response({"status": "success", "message": f"Unloaded model: {m.name}"})
        for key in list(self.instances):
            self._unload(key, "api")
        return json_response({"status": "success", "message": "Unloaded all models"})

    async def _lem_stats(self, req: Request) -> Response:
        st = self.last_stats or {
            "time_to_first_token": None,
            "tokens_per_second": None,
            "input_tokens": None,
            "output_tokens": None,
            "prompt_tokens": None,
            "cache_tokens": None,
        }
        return json_response(dict(st))
