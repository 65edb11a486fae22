"""A fake OpenAI-compatible server in five flavours: ``llama-server``, ``lmstudio``, ``vllm``, ``lemonade``,
``generic``.

Common to all (see docs/backend-facts.md#llama-server and the sections after it):

* ``POST /v1/chat/completions`` and ``/v1/completions``: JSON, or SSE (``data: {...}\\n\\n`` ...
  ``data: [DONE]``) with ``stream: true``; ``stream_options.include_usage`` adds a last chunk with empty
  ``choices`` and ``usage``; tool calls in the OpenAI shape (streamed as deltas with ``index``); ``stop``,
  ``seed``, ``response_format`` accepted (and recorded in ``.requests``);
  ``usage.prompt_tokens_details.cached_tokens`` (not on lmstudio).
* ``POST /v1/embeddings`` (float or base64), ``GET /v1/models``.
* A per-instance prefix cache (per slot on llama-server; 16-token blocks on vLLM).

Flavour extras:

* llama-server: ``/health``, ``/props``, ``/slots``, ``/tokenize``, ``/detokenize``, ``/completion``,
  ``/metrics``; a ``timings`` object; context fixed at start (``n_ctx`` split over ``n_slots``); an
  over-long prompt is a 400 ``exceed_context_size_error``; ``cache_prompt``/``n_keep``/``id_slot`` per
  request.
* lmstudio: ``/api/v1/models`` (``loaded_instances[].config.context_length``), ``/api/v1/models/load``
  (reloads with a new config; unknown keys such as KV-quantization fields are a 400),
  ``/api/v1/models/unload``, ``/api/v0/models``; JIT loading on first use with ``ttl``; unknown endpoints
  answer 200 with an error body.
* vllm: ``/v1/models`` with ``max_model_len``, ``/metrics`` (``vllm:`` metrics), ``/version``, ``/health``,
  ``/tokenize``.
* lemonade: ``/api/v1/health`` (``all_models_loaded[].recipe_options.ctx_size``), ``/api/v1/load`` (a
  change in ``ctx_size``/``llamacpp_backend``/``llamacpp_args`` reloads), ``/api/v1/unload``,
  ``/api/v1/stats``; every path under ``/v1``, ``/api/v1``, ``/v0`` and ``/api/v0``.

This module holds the server class and its routing; the handlers are mixins in the ``openai_*`` modules
(one per job: shapes, model state, common routes, and one per flavour).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Iterator
from typing import Any

from .batching import SlotGate
from .models import FakeModel
from .openai_lemonade import LemonadeRoutes
from .openai_llama_server import LlamaServerRoutes
from .openai_lmstudio import LMStudioRoutes
from .openai_routes import OpenAIRoutes
from .openai_shapes import (
    OpenAIResult,
    chat_completion_body,
    chat_completion_events,
    completion_body,
    completion_events,
    embeddings_body,
    parse_sse,
    sse_events,
)
from .openai_state import FLAVOURS, Instance, ModelState, flavour_models
from .openai_vllm import VLLMRoutes
from .server import FakeServer
from .wire import Request, Response, StreamResponse, dumps, json_response

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
    "parse_sse",
    "run_fake_openai",
    "sse_events",
]


class FakeOpenAI(LlamaServerRoutes, LMStudioRoutes, VLLMRoutes, LemonadeRoutes, OpenAIRoutes, ModelState, FakeServer):
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
    OWN_KNOBS = ("n_ctx", "load_delay", "load_seconds", "loading", "metrics", "report_cached_tokens", "slot_seconds")

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
        slot_seconds: float = 0.0,
        **common: Any,
    ) -> None:
        if flavour not in FLAVOURS:
            raise ValueError(f"flavour must be one of {FLAVOURS}, not {flavour!r}")
        self.flavour = flavour
        self.name = f"fake-{flavour}"
        self.models: list[FakeModel] = list(models) if models is not None else flavour_models(flavour)
        if not self.models:
            raise ValueError("at least one model is needed")
        self.n_ctx = n_ctx
        self.n_slots = max(1, n_slots)
        #: > 0: a chat or completion holds one of ``n_slots`` slots this long; the rest wait in FIFO order
        #: (a batching server; ``gate`` records what was inside at once)
        self.slot_seconds = slot_seconds
        self.gate = SlotGate(self.n_slots)
        self.load_delay = load_delay
        self.load_seconds = load_seconds
        self.loading = loading
        self.metrics = metrics
        self.report_cached_tokens = flavour != "lmstudio" if report_cached_tokens is None else report_cached_tokens
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

    async def _in_slot(self, handler: Any, req: Request) -> Response | StreamResponse:
        if self.slot_seconds <= 0:
            result: Response | StreamResponse = await handler(req)
            return result
        body = req.json() if req.body else {}
        messages = body.get("messages") if isinstance(body, dict) else None
        last = messages[-1] if isinstance(messages, list) and messages and isinstance(messages[-1], dict) else {}
        async with self.gate.hold(str(last.get("content") or body.get("prompt") or "")):
            await asyncio.sleep(float(self.slot_seconds))
            result = await handler(req)
            return result

    def _register_routes(self) -> None:
        r = self.route
        r("POST", "/v1/chat/completions", lambda req: self._in_slot(self._chat, req))
        r("POST", "/v1/completions", lambda req: self._in_slot(self._completions, req))
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


@contextlib.contextmanager
def run_fake_openai(flavour: str = "generic", **kw: Any) -> Iterator[FakeOpenAI]:
    """``with run_fake_openai(flavour="llama-server", n_ctx=8192) as fake: ...``"""
    fake = FakeOpenAI(flavour, **kw)
    fake.start()
    try:
        yield fake
    finally:
        fake.close()
