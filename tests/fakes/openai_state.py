"""Model catalogue and load state of the OpenAI-style fakes: which models each flavour lists, what is
loaded with which config and context, and JIT loading / TTL expiry."""

from __future__ import annotations

import asyncio
import itertools
import shlex
import time
from dataclasses import dataclass, field
from typing import Any

from .models import FakeModel, default_models

__all__ = ["FLAVOURS", "ApiError", "Instance", "ModelState", "Slot", "flavour_models"]

FLAVOURS = ("llama-server", "lmstudio", "vllm", "lemonade", "generic")


class ApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(str(body))
        self.status = status
        self.body = body


@dataclass
class Slot:
    id: int
    n_ctx: int
    cache: list[str] = field(default_factory=list)
    last_used: int = 0
    n_requests: int = 0


@dataclass
class Instance:
    """A loaded model. ``n_ctx`` is the context one request can use (per slot on llama-server)."""

    model: FakeModel
    n_ctx: int
    config: dict[str, Any]
    slots: list[Slot]
    ttl: float | None = None
    jit: bool = False
    last_used: float = field(default_factory=time.time)
    prefixes: list[list[str]] = field(default_factory=list)  # vLLM: recent prompts (global prefix cache)


def flavour_models(flavour: str) -> list[FakeModel]:
    llama, gemma, nomic = default_models()
    names: dict[str, list[tuple[str, FakeModel]]] = {
        "llama-server": [("llama-3.2-1b-instruct", llama)],
        "lmstudio": [
            ("llama-3.2-1b-instruct", llama),
            ("google/gemma-3-270m", gemma),
            ("text-embedding-nomic-embed-text-v1.5", nomic),
        ],
        "vllm": [("meta-llama/Llama-3.2-1B-Instruct", llama)],
        "lemonade": [
            ("Llama-3.2-1B-Instruct-GGUF", llama),
            ("Gemma-3-270m-it-GGUF", gemma),
            ("nomic-embed-text-v1-GGUF", nomic),
        ],
        "generic": [
            ("llama-3.2-1b-instruct", llama),
            ("gemma-3-270m-it", gemma),
            ("text-embedding-nomic-embed-text", nomic),
        ],
    }
    return [m.renamed(n) for n, m in names[flavour]]


class ModelState:
    """Mixin of :class:`fakes.fake_openai.FakeOpenAI`: load, reload, unload and find instances."""

    def find_model(self, name: Any) -> FakeModel | None:
        if not isinstance(name, str):
            return None
        for m in self.models:
            if m.name == name or m.name.lower() == name.lower():
                return m
        return None

    def context_of(self, model: str | None = None) -> int | None:
        """Per-request context of the loaded ``model`` (or of the first loaded instance)."""
        if model is None:
            inst = next(iter(self.instances.values()), None)
        else:
            found = self.find_model(model)
            inst = self.instances.get(found.name) if found else None
        return None if inst is None else inst.n_ctx

    def _default_config(self, m: FakeModel) -> dict[str, Any]:
        if self.flavour == "lmstudio":
            return {
                "context_length": min(self.n_ctx, m.context_length),
                "eval_batch_size": 512,
                "flash_attention": True,
                "offload_kv_cache_to_gpu": True,
                "parallel": 4,
            }
        if self.flavour == "lemonade":
            return {"ctx_size": -1, "llamacpp_backend": "vulkan", "llamacpp_args": ""}
        return {}

    def _resolve(self, m: FakeModel, config: dict[str, Any]) -> tuple[int, int]:
        """``(per-request context, slots)`` for a config."""
        f = self.flavour
        if f == "llama-server":
            return max(1, self.n_ctx // self.n_slots), self.n_slots
        if f == "lmstudio":
            return int(config["context_length"]), 1
        if f == "lemonade":
            ctx = int(config.get("ctx_size", -1))
            if ctx <= 0:
                ctx = min(self.n_ctx, m.context_length)
            slots = 1
            args = shlex.split(str(config.get("llamacpp_args") or ""))
            for flag, value in itertools.pairwise(args):
                if flag in ("-np", "--parallel") and value.isdigit():
                    slots = max(1, int(value))
            return max(1, ctx // slots), slots
        if f == "vllm":
            return min(self.n_ctx, m.context_length), 1
        return self.n_ctx, 1

    def _load(
        self, m: FakeModel, config: dict[str, Any], *, jit: bool, count: bool = True, ttl: float | None = None
    ) -> Instance:
        old = self.instances.get(m.name)
        n_ctx, n_slots = self._resolve(m, config)
        inst = Instance(m, n_ctx, dict(config), [Slot(i, n_ctx) for i in range(n_slots)], ttl=ttl, jit=jit)
        if count:
            kind = "reload" if old is not None else "load"
            if old is not None:
                self.reloads += 1
            else:
                self.loads += 1
            self.load_events.append(
                {
                    "model": m.name,
                    "kind": kind,
                    "config": dict(config),
                    "n_ctx": n_ctx,
                    "previous": dict(old.config) if old else None,
                }
            )
        if self.flavour == "lemonade":  # one model per type at a time
            kind_of = "embedding" if m.is_embedding_only else "llm"
            for other in [k for k, i in self.instances.items() if k != m.name]:
                if ("embedding" if self.instances[other].model.is_embedding_only else "llm") == kind_of:
                    self._unload(other, "evicted")
        self.instances[m.name] = inst
        return inst

    def _unload(self, name: str, reason: str) -> bool:
        inst = self.instances.pop(name, None)
        if inst is None:
            return False
        self.unloads += 1
        self.load_events.append({"model": name, "kind": "unload", "config": dict(inst.config), "reason": reason})
        return True

    def _expire(self) -> None:
        now = time.time()
        for name in [k for k, i in self.instances.items() if i.ttl is not None and now - i.last_used > i.ttl]:
            self._unload(name, "ttl")

    async def _sleep_load(self) -> None:
        if self.load_delay > 0:
            await asyncio.sleep(float(self.load_delay))

    async def _instance_for(self, name: Any, body: dict[str, Any]) -> Instance:
        if self.loading:
            raise ApiError(503, self.error_body(503, "Loading model"))
        self._expire()
        if self.flavour == "llama-server":
            inst = next(iter(self.instances.values()), None)
            if inst is None:
                inst = self._load(self.models[0], {}, jit=False)
            inst.last_used = time.time()
            return inst
        m = self.find_model(name)
        if m is None:
            if self.flavour == "generic":
                m = self.models[0]
            elif self.flavour == "vllm":
                raise ApiError(
                    404,
                    {
                        "error": {
                            "message": f"The model `{name}` does not exist.",
                            "type": "NotFoundError",
                            "param": "model",
                            "code": 404,
                        }
                    },
                )
            elif self.flavour == "lmstudio":
                raise ApiError(
                    404,
                    {
                        "error": {
                            "message": f'Invalid model identifier "{name}".',
                            "type": "invalid_request_error",
                            "param": "model",
                            "code": "model_not_found",
                        }
                    },
                )
            else:
                raise ApiError(404, self.error_body(404, f"Model not found: {name}"))
        inst = self.instances.get(m.name)
        if inst is None:
            ttl = body.get("ttl") if self.flavour == "lmstudio" else None
            ttl_s = float(ttl) if isinstance(ttl, int | float) and not isinstance(ttl, bool) and ttl > 0 else None
            inst = self._load(m, self._default_config(m), jit=True, ttl=ttl_s)
            await self._sleep_load()
        inst.last_used = time.time()
        return inst
