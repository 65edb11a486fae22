"""A fake OpenAI-compatible server in five flavours: ``llama-server``, ``lmstudio``, ``vllm``, ``lemonade``,
``generic``.

Common to all (see /work/shared/research/backend-knobs.md sections 2, 4, 6, 7.1):

* ``POST /v1/chat/completions`` and ``/v1/completions``: JSON, or SSE (``data: {...}\\n\\n`` ... ``data:
  [DONE]``)
  with ``stream: true``; ``stream_options.include_usage`` adds a last chunk with empty ``choices`` and
  ``usage``;
  tool calls in the OpenAI shape (streamed as deltas with ``index``); ``stop``, ``seed``, ``response_format``
  accepted (and recorded in ``.requests``); ``usage.prompt_tokens_details.cached_tokens`` (not on lmstudio).
* ``POST /v1/embeddings`` (float or base64), ``GET /v1/models``.
* A per-instance prefix cache (per slot on llama-server; 16-token blocks on vLLM).

Flavour extras:

* llama-server: ``/health``, ``/props``, ``/slots``, ``/tokenize``, ``/detokenize``, ``/completion``,
  ``/metrics``;
  a ``timings`` object; context fixed at start (``n_ctx`` split over ``n_slots``); an over-long prompt is a
  400
  ``exceed_context_size_error``; ``cache_prompt``/``n_keep``/``id_slot`` per request.
* lmstudio: ``/api/v1/models`` (``loaded_instances[].config.context_length``), ``/api/v1/models/load``
  (reloads with
  a new config; unknown keys such as KV-quantization fields are a 400), ``/api/v1/models/unload``,
  ``/api/v0/models``; JIT loading on first use with ``ttl``; unknown endpoints answer 200 with an error body.
* vllm: ``/v1/models`` with ``max_model_len``, ``/metrics`` (``vllm:`` metrics), ``/version``, ``/health``,
  ``/tokenize``.
* lemonade: ``/api/v1/health`` (``all_models_loaded[].recipe_options.ctx_size``), ``/api/v1/load`` (a change
  in
  ``ctx_size``/``llamacpp_backend``/``llamacpp_args`` reloads), ``/api/v1/unload``, ``/api/v1/stats``; every
  path
  under ``/v1``, ``/api/v1``, ``/v0`` and ``/api/v0``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shlex
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .server import (
    FakeModel,
    FakeServer,
    Output,
    Request,
    Response,
    StreamResponse,
    common_prefix_len,
    default_models,
    dumps,
    embed_text,
    json_response,
    pieces,
    render_messages,
    token_id,
)

__all__ = [
    "FLAVOURS",
    "FakeOpenAI",
    "Instance",
    "OpenAIResult",
    "chat_completion_body",
    "chat_completion_events",
    "completion_body",
    "completion_events",
    "embeddings_body",
    "run_fake_openai",
    "sse_events",
]

FLAVOURS = ("llama-server", "lmstudio", "vllm", "lemonade", "generic")

_ids = itertools.count(1)


def _new_id(prefix: str) -> str:
    return f"{prefix}-{next(_ids):012x}"


# ------------------------------------------------------------------------------------------------------------
# OpenAI response shapes (shared with the fake Ollama's /v1 layer)
# ------------------------------------------------------------------------------------------------------------


@dataclass
class OpenAIResult:
    model: str
    output: Output
    prompt_tokens: int
    cached_tokens: int | None  # None: no prompt_tokens_details in usage
    system_fingerprint: str | None = None
    timings: dict[str, Any] | None = None
    id: str = field(default_factory=lambda: _new_id("chatcmpl"))
    created: int = field(default_factory=lambda: int(time.time()))

    def usage(self) -> dict[str, Any]:
        n = len(self.output.pieces)
        usage: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": n,
            "total_tokens": self.prompt_tokens + n,
        }
        if self.cached_tokens is not None:
            usage["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        return usage


def _openai_tool_calls(calls: list[dict[str, Any]], id_seed: str) -> list[dict[str, Any]]:
    return [
        {
            "id": f"call_{token_id(id_seed + c['name'] + str(i)):08x}",
            "type": "function",
            "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])},
        }
        for i, c in enumerate(calls)
    ]


def _base(result: OpenAIResult, obj: str) -> dict[str, Any]:
    base: dict[str, Any] = {"id": result.id, "object": obj, "created": result.created, "model": result.model}
    if result.system_fingerprint:
        base["system_fingerprint"] = result.system_fingerprint
    return base


def chat_completion_body(result: OpenAIResult) -> dict[str, Any]:
    out = result.output
    message: dict[str, Any] = {"role": "assistant", "content": out.text}
    if out.tool_calls:
        message["content"] = out.text or None
        message["tool_calls"] = _openai_tool_calls(out.tool_calls, result.id)
    body = _base(result, "chat.completion")
    body["choices"] = [{"index": 0, "message": message, "logprobs": None, "finish_reason": out.finish_reason}]
    body["usage"] = result.usage()
    if result.timings is not None:
        body["timings"] = result.timings
    return body


def sse_events(objs: list[dict[str, Any]]) -> list[bytes]:
    return [b"data: " + dumps(o) + b"\n\n" for o in objs] + [b"data: [DONE]\n\n"]


def chat_completion_events(result: OpenAIResult, chunks: list[str], include_usage: bool) -> list[bytes]:
    """SSE payloads: role chunk, content chunks (or tool-call deltas), the finish chunk, the usage chunk when
    ``include_usage``, then ``[DONE]``."""
    base = _base(result, "chat.completion.chunk")

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    objs = [chunk({"role": "assistant", "content": ""})]
    objs.extend(chunk({"content": c}) for c in chunks)
    out = result.output
    if out.tool_calls:
        for i, call in enumerate(_openai_tool_calls(out.tool_calls, result.id)):
            fn = call["function"]
            head = {
                "index": i,
                "id": call["id"],
                "type": "function",
                "function": {"name": fn["name"], "arguments": ""},
            }
            objs.append(chunk({"tool_calls": [head]}))
            for part in pieces(fn["arguments"]) or [""]:
                objs.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": part}}]}))
    last = chunk({}, out.finish_reason)
    if result.timings is not None:
        last["timings"] = result.timings
    objs.append(last)
    if include_usage:
        usage_chunk: dict[str, Any] = {**base, "choices": [], "usage": result.usage()}
        if result.timings is not None:
            usage_chunk["timings"] = result.timings
        objs.append(usage_chunk)
    return sse_events(objs)


def completion_body(result: OpenAIResult) -> dict[str, Any]:
    body = _base(result, "text_completion")
    body["id"] = result.id.replace("chatcmpl", "cmpl")
    body["choices"] = [
        {
            "text": result.output.text,
            "index": 0,
            "logprobs": None,
            "finish_reason": result.output.finish_reason,
        }
    ]
    body["usage"] = result.usage()
    if result.timings is not None:
        body["timings"] = result.timings
    return body


def completion_events(result: OpenAIResult, chunks: list[str], include_usage: bool) -> list[bytes]:
    base = _base(result, "text_completion")
    base["id"] = result.id.replace("chatcmpl", "cmpl")

    def chunk(text: str, finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}]}

    objs = [chunk(c) for c in chunks]
    last = chunk("", result.output.finish_reason)
    if result.timings is not None:
        last["timings"] = result.timings
    objs.append(last)
    if include_usage:
        objs.append({**base, "choices": [], "usage": result.usage()})
    return sse_events(objs)


def embeddings_body(
    model: str, vectors: list[list[float]], n_tokens: int, encoding_format: Any
) -> dict[str, Any]:
    data = []
    for i, vec in enumerate(vectors):
        emb: Any = vec
        if encoding_format == "base64":
            emb = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode("ascii")
        data.append({"object": "embedding", "index": i, "embedding": emb})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
    }


# ------------------------------------------------------------------------------------------------------------
# The server
# ------------------------------------------------------------------------------------------------------------


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


def _flavour_models(flavour: str) -> list[FakeModel]:
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


class FakeOpenAI(FakeServer):
    """Fake OpenAI-compatible server. Constructor kwargs (besides the common knobs of :class:`FakeServer`):

    * ``flavour``: one of :data:`FLAVOURS` (default "generic").
    * ``models``: list of :class:`FakeModel` (default: per-flavour names of llama 3.2 1B / gemma3 270M /
      nomic).
    * ``n_ctx``: llama-server: total context fixed at start (split over ``n_slots``); vllm: ``max_model_len``;
      lmstudio: context of a JIT load; lemonade: what ``ctx_size: -1`` (auto) resolves to; generic: the limit.
      Default 4096.
    * ``n_slots``: llama-server parallel slots (1).
    * ``preload``: load the first model at start (default: True except lmstudio and lemonade; vllm and generic
      serve every model in ``models``).
    * ``load_delay``: seconds actually slept on a (re)load (0); ``load_seconds``: reported load time (0.25).
    * ``loading``: llama-server answers 503 "Loading model" on ``/health`` and inference.
    * ``metrics``: llama-server ``/metrics`` enabled (True).
    * ``report_cached_tokens``: put ``prompt_tokens_details.cached_tokens`` in usage (default: all but
      lmstudio).
    * ``model_path``, ``build_info``, ``server_version``: reported strings.

    State for assertions: ``requests``, ``instances`` (model name -> :class:`Instance`), ``loads``,
    ``reloads``, ``unloads``, ``load_events`` (list of dicts), ``stats`` (token counters), ``last_stats``.
    """

    name = "fake-openai"
    inference_paths = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/completion"})
    OWN_KNOBS = ("n_ctx", "load_delay", "load_seconds", "loading", "metrics", "report_cached_tokens")

    def __init__(
        self,
        flavour: str = "generic",
        *,
        models: list[FakeModel] | None = None,
        n_ctx: int = 4096,
        n_slots: int = 1,
        preload: bool | None = None,
        load_delay: float = 0.0,
        load_seconds: float = 0.25,
        loading: bool = False,
        metrics: bool = True,
        report_cached_tokens: bool | None = None,
        model_path: str | None = None,
        build_info: str = "b7100-2a5c8f3e",
        server_version: str | None = None,
        **common: Any,
    ) -> None:
        if flavour not in FLAVOURS:
            raise ValueError(f"flavour must be one of {FLAVOURS}, not {flavour!r}")
        self.flavour = flavour
        self.name = f"fake-{flavour}"
        self.models: list[FakeModel] = list(models) if models is not None else _flavour_models(flavour)
        if not self.models:
            raise ValueError("at least one model is needed")
        self.n_ctx = n_ctx
        self.n_slots = max(1, n_slots)
        self.load_delay = load_delay
        self.load_seconds = load_seconds
        self.loading = loading
        self.metrics = metrics
        self.report_cached_tokens = (
            flavour != "lmstudio" if report_cached_tokens is None else report_cached_tokens
        )
        first = self.models[0]
        self.model_path = model_path or f"/models/{first.name.split('/')[-1]}-{first.quantization_level}.gguf"
        self.build_info = build_info
        self.server_version = server_version or {"vllm": "0.11.0", "lemonade": "9.1.4"}.get(flavour, "1.0.0")
        self.instances: dict[str, Instance] = {}
        self.loads = 0
        self.reloads = 0
        self.unloads = 0
        self.load_events: list[dict[str, Any]] = []
        self.stats = {
            "requests": 0,
            "prompt_tokens": 0,
            "prompt_tokens_new": 0,
            "cached_tokens": 0,
            "completion_tokens": 0,
            "prompt_seconds": 0.0,
            "predicted_seconds": 0.0,
        }
        self.last_stats: dict[str, Any] = {}
        self._vocab: dict[int, str] = {}
        self._use_counter = itertools.count(1)
        self._preload = (flavour not in ("lmstudio", "lemonade")) if preload is None else preload
        super().__init__(**common)
        self._initial_load()

    # -- FakeServer hooks -----------------------------------------------------------------------------------

    def knob_names(self) -> tuple[str, ...]:
        return (*super().knob_names(), *self.OWN_KNOBS)

    def reset_state(self) -> None:
        self.instances.clear()
        self.loads = self.reloads = self.unloads = 0
        self.load_events.clear()
        self._initial_load()

    def _initial_load(self) -> None:
        if not self._preload:
            return
        serve = self.models if self.flavour in ("vllm", "generic") else self.models[:1]
        for m in serve:
            self._load(m, self._default_config(m), jit=False, count=False)

    def error_body(self, status: int, message: str) -> Any:
        if self.flavour in ("llama-server", "lemonade"):
            kind = {
                400: "invalid_request_error",
                404: "not_found_error",
                501: "not_supported_error",
                503: "unavailable_error",
            }.get(status, "server_error")
            return {"error": {"code": status, "message": message, "type": kind}}
        if self.flavour == "vllm":
            kind = {400: "BadRequestError", 404: "NotFoundError"}.get(status, "InternalServerError")
            return {"error": {"message": message, "type": kind, "param": None, "code": status}}
        kind = {400: "invalid_request_error", 404: "invalid_request_error"}.get(status, "server_error")
        return {"error": {"message": message, "type": kind, "param": None, "code": None}}

    def not_found(self, req: Request) -> Response:
        if self.flavour == "lmstudio":  # LM Studio really answers 200 here
            return json_response({"error": f"Unexpected endpoint or method. ({req.method} {req.path})"})
        if self.flavour == "vllm":
            return json_response({"detail": "Not Found"}, status=404)
        return json_response(self.error_body(404, "File Not Found"), status=404)

    def stream_error_event(self, message: str) -> bytes:
        return b"data: " + dumps(self.error_body(500, message)) + b"\n\n"

    def normalize_path(self, path: str) -> str:
        f = self.flavour
        if f == "lemonade":
            for prefix in ("/api/v1/", "/api/v0/", "/v0/"):
                if path.startswith(prefix):
                    return "/v1/" + path[len(prefix) :]
        elif f == "llama-server":
            if path in ("/chat/completions", "/completions", "/embeddings", "/models"):
                return "/v1" + path
            if path == "/v1/health":
                return "/health"
            if path == "/embedding":
                return "/v1/embeddings"
        elif f == "lmstudio":
            for tail in ("/chat/completions", "/completions", "/embeddings"):
                if path == "/api/v0" + tail:
                    return "/v1" + tail
        return path

    def _register_routes(self) -> None:
        r = self.route
        r("POST", "/v1/chat/completions", self._chat)
        r("POST", "/v1/completions", self._completions)
        r("POST", "/v1/embeddings", self._embeddings)
        r("GET", "/v1/models", self._models)
        f = self.flavour
        if f == "llama-server":
            r("GET", "/health", self._ls_health)
            r("GET", "/props", self._ls_props)
            r("GET", "/slots", self._ls_slots)
            r("GET", "/metrics", self._ls_metrics)
            r("POST", "/tokenize", self._ls_tokenize)
            r("POST", "/detokenize", self._ls_detokenize)
            r("POST", "/completion", self._ls_completion)
        elif f == "lmstudio":
            r("GET", "/api/v1/models", self._lms_models)
            r("POST", "/api/v1/models/load", self._lms_load)
            r("POST", "/api/v1/models/unload", self._lms_unload)
            r("GET", "/api/v0/models", self._lms_v0_models)
        elif f == "vllm":
            r("GET", "/health", self._vllm_health)
            r("GET", "/version", self._vllm_version)
            r("GET", "/metrics", self._vllm_metrics)
            r("POST", "/tokenize", self._vllm_tokenize)
        elif f == "lemonade":
            r("GET", "/v1/health", self._lem_health)
            r("POST", "/v1/load", self._lem_load)
            r("POST", "/v1/unload", self._lem_unload)
            r("GET", "/v1/stats", self._lem_stats)

    # -- model state ----------------------------------------------------------------------------------------

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
        self.load_events.append(
            {"model": name, "kind": "unload", "config": dict(inst.config), "reason": reason}
        )
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
            ttl_s = (
                float(ttl) if isinstance(ttl, int | float) and not isinstance(ttl, bool) and ttl > 0 else None
            )
            inst = self._load(m, self._default_config(m), jit=True, ttl=ttl_s)
            await self._sleep_load()
        inst.last_used = time.time()
        return inst

    # -- generation core ------------------------------------------------------------------------------------

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
            raise ApiError(
                400, self.error_body(400, "Invalid type for 'stop': expected a string or an array")
            )
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
                raise ApiError(
                    400, self.error_body(400, "'messages' is required and must be a non-empty array")
                )
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
        texts = [
            x if isinstance(x, str) else " ".join(map(str, x)) if isinstance(x, list) else str(x) for x in raw
        ]
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
        return json_response(
            embeddings_body(model or inst.model.name, vectors, n_tokens, body.get("encoding_format"))
        )

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

    # -- llama-server ---------------------------------------------------------------------------------------

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
                self.error_body(
                    501, "This server does not support metrics endpoint. Start it with `--metrics`"
                ),
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

    # -- LM Studio ------------------------------------------------------------------------------------------

    @staticmethod
    def _bits(quant: str) -> int:
        q = quant.upper()
        return (
            16
            if q.startswith(("F16", "BF16"))
            else 32
            if q.startswith("F32")
            else int(q[1])
            if q[1:2].isdigit()
            else 4
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
            return self._lms_error(
                400, f"Unrecognized key(s) in object: {keys}", "unrecognized_keys", unknown[0]
            )
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
            return self._lms_error(
                404, f"No model found with instance ID '{iid}'", "model_not_found", "instance_id"
            )
        return json_response({"instance_id": iid})

    # -- vLLM -----------------------------------------------------------------------------------------------

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

    # -- Lemonade -------------------------------------------------------------------------------------------

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
                self.error_body(
                    400, f"llamacpp_args may not contain {managed[0]}: it is managed by Lemonade"
                ),
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


@contextlib.contextmanager
def run_fake_openai(flavour: str = "generic", **kw: Any) -> Iterator[FakeOpenAI]:
    """``with run_fake_openai(flavour="llama-server", n_ctx=8192) as fake: ...``"""
    fake = FakeOpenAI(flavour, **kw)
    fake.start()
    try:
        yield fake
    finally:
        fake.close()


def parse_sse(raw: bytes | str) -> list[Any]:
    """Parse an SSE body into the JSON payloads plus the literal ``"[DONE]"`` (test helper)."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    out: list[Any] = []
    for block in text.split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: "):
                data = line[len("data: ") :]
                out.append(data if data == "[DONE]" else json.loads(data))
    return out
