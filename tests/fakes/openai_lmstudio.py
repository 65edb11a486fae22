"""LM Studio's REST API: ``/api/v1/models`` (+ ``/load``, ``/unload``) and ``/api/v0/models``."""

from __future__ import annotations

from typing import Any

from .openai_state import ApiError
from .wire import Request, Response, json_response

__all__ = ["LMStudioRoutes"]

_LMSTUDIO_LOAD_KEYS = frozenset(
    {
        "model",
        "context_length",
        "eval_batch_size",
        "flash_attention",
        "num_experts",
        "offload_kv_cache_to_gpu",
        "echo_load_config",
    }
)


class LMStudioRoutes:
    """Mixin of :class:`fakes.fake_openai.FakeOpenAI` (flavour ``lmstudio``)."""

    @staticmethod
    def _bits(quant: str) -> int:
        q = quant.upper()
        return (
            16 if q.startswith(("F16", "BF16")) else 32 if q.startswith("F32") else int(q[1]) if q[1:2].isdigit() else 4
        )

    async def _lms_models(self, req: Request) -> Response:
        self._expire()
        out = []
        for m in self.models:
            inst = self.instances.get(m.name)
            out.append(
                {
                    "type": "embedding" if m.is_embedding_only else "llm",
                    "publisher": m.name.split("/")[0] if "/" in m.name else "lmstudio-community",
                    "key": m.name,
                    "display_name": m.name.split("/")[-1],
                    "architecture": m.architecture,
                    "quantization": {
                        "name": m.quantization_level,
                        "bits_per_weight": self._bits(m.quantization_level),
                    },
                    "size_bytes": m.size,
                    "params_string": m.parameter_size,
                    "loaded_instances": [] if inst is None else [{"id": m.name, "config": dict(inst.config)}],
                    "max_context_length": m.context_length,
                    "format": "gguf",
                    "capabilities": {"vision": False, "trained_for_tool_use": "tools" in m.capabilities},
                    "description": None,
                }
            )
        return json_response({"models": out})

    async def _lms_v0_models(self, req: Request) -> Response:
        self._expire()
        data = []
        for m in self.models:
            inst = self.instances.get(m.name)
            entry: dict[str, Any] = {
                "id": m.name,
                "object": "model",
                "type": "embeddings" if m.is_embedding_only else "llm",
                "publisher": m.name.split("/")[0] if "/" in m.name else "lmstudio-community",
                "arch": m.architecture,
                "compatibility_type": "gguf",
                "quantization": m.quantization_level,
                "state": "loaded" if inst else "not-loaded",
                "max_context_length": m.context_length,
            }
            if inst is not None:
                entry["loaded_context_length"] = inst.n_ctx
            data.append(entry)
        return json_response({"object": "list", "data": data})

    def _lms_error(self, status: int, message: str, code: str, param: str | None = None) -> Response:
        return json_response(
            {"error": {"message": message, "type": "invalid_request", "param": param, "code": code}},
            status=status,
        )

    async def _lms_load(self, req: Request) -> Response:
        try:
            body = self._body(req)
        except ApiError as exc:
            return json_response(exc.body, status=exc.status)
        unknown = [k for k in body if k not in _LMSTUDIO_LOAD_KEYS]
        if unknown:
            keys = ", ".join(f"'{k}'" for k in unknown)
            return self._lms_error(400, f"Unrecognized key(s) in object: {keys}", "unrecognized_keys", unknown[0])
        m = self.find_model(body.get("model"))
        if m is None:
            return self._lms_error(404, f"Model not found: {body.get('model')}", "model_not_found", "model")
        config = self._default_config(m)
        for key in ("context_length", "eval_batch_size", "num_experts"):
            if key in body:
                v = body[key]
                if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                    return self._lms_error(400, f"'{key}' must be a positive integer", "invalid_type", key)
                config[key] = v
        for key in ("flash_attention", "offload_kv_cache_to_gpu"):
            if key in body:
                if not isinstance(body[key], bool):
                    return self._lms_error(400, f"'{key}' must be a boolean", "invalid_type", key)
                config[key] = body[key]
        config["context_length"] = min(int(config["context_length"]), m.context_length)  # context auto-fit
        old = self.instances.get(m.name)
        if old is None or old.config != config:
            self._load(m, config, jit=False)
            await self._sleep_load()
        out: dict[str, Any] = {
            "type": "embedding" if m.is_embedding_only else "llm",
            "instance_id": m.name,
            "load_time_seconds": self.load_seconds,
            "status": "loaded",
        }
        if body.get("echo_load_config"):
            out["load_config"] = dict(config)
        return json_response(out)

    async def _lms_unload(self, req: Request) -> Response:
        try:
            body = self._body(req)
        except ApiError as exc:
            return json_response(exc.body, status=exc.status)
        iid = body.get("instance_id")
        m = self.find_model(iid)
        if m is None or not self._unload(m.name, "api"):
            return self._lms_error(404, f"No model found with instance ID '{iid}'", "model_not_found", "instance_id")
        return json_response({"instance_id": iid})
