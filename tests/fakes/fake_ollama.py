"""A fake Ollama server that behaves like Ollama v0.30+ (or an older version via ``version=``).

What it models (see docs/backend-facts.md#ollama):

* ``/api/chat`` and ``/api/generate``: NDJSON streaming by default, one JSON object with ``stream:false``;
  the final object has ``done``, ``done_reason`` and nanosecond timings.
* ``options``: unknown keys are ignored (recorded in ``.ignored_options``); a known key with the wrong JSON
  type is an HTTP 500 ``option "x" must be of type integer``.
* The scheduler: one runner per model, reloaded when a runner option (``num_ctx``, ``num_batch``, ``num_gpu``
  unless -1/omitted, ``main_gpu``, ``use_mmap``, ``num_thread``; from v0.30 also top-level ``shift``) differs
  from the loaded runner. Omitting ``num_ctx`` means the default context (``default_num_ctx``, 4096), so it
  reloads a runner loaded with another explicit ``num_ctx``. ``num_ctx`` is clamped to the trained context.
  Predict options and ``keep_alive`` never reload. ``.loads`` counts first loads, ``.reloads`` reloads.
* ``keep_alive``: number of seconds, or a Go duration string; negative = forever; 0 = unload after the
  request; a unit-less string is a 400. A request without messages/prompt loads the model
  (``done_reason: "load"``); with ``keep_alive: 0`` it unloads it (``done_reason: "unload"``).
* Prefix cache per runner: ``prompt_eval_count`` is the full prompt (except on exactly v0.30.0, where it is
  the uncached part only), ``prompt_eval_duration`` covers only the uncached tokens.
* ``/api/show``, ``/api/tags``, ``/api/ps``, ``/api/version``, ``/api/embed``, ``/api/embeddings``.
* ``/api/pull``: NDJSON progress (status, digest, total, completed), ``success`` or ``{"error": ...}``
  (:mod:`fakes.ollama_pull`); a finished pull shows up in ``/api/tags``.
* ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``, ``/v1/models``: the OpenAI-compatible
  layer, which drops ``options``/``keep_alive``/any unknown field (recorded in ``.dropped_on_v1``) and so
  runs at the default context -- reloading a runner that was loaded with an explicit ``num_ctx``.

This module holds the server class and its routing; the scheduler and the route handlers are mixins in
the ``ollama_*`` modules.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from typing import Any

from .models import FakeModel, default_models
from .ollama_api import OllamaNativeRoutes
from .ollama_pull import OllamaPullRoutes, default_registry
from .ollama_scheduler import OllamaScheduler
from .ollama_types import LoadEvent, Runner, parse_go_duration
from .ollama_v1 import OllamaV1Routes
from .server import FakeServer

__all__ = ["FakeOllama", "LoadEvent", "ndjson_lines", "parse_go_duration", "run_fake_ollama"]


def _version_tuple(version: str) -> tuple[int, int, int]:
    nums = [int(x) for x in re.findall(r"\d+", version)[:3]]
    while len(nums) < 3:
        nums.append(0)
    return (nums[0], nums[1], nums[2])


class FakeOllama(OllamaV1Routes, OllamaNativeRoutes, OllamaPullRoutes, OllamaScheduler, FakeServer):
    """Fake Ollama. Constructor kwargs (besides the common knobs of :class:`FakeServer`):

    * ``models``: list of :class:`FakeModel` (default: llama3.2:1b, gemma3:270m, nomic-embed-text).
    * ``version``: reported by ``/api/version`` and selects era-specific behaviour (default "0.30.2").
    * ``default_num_ctx``: the context used when a request has no ``num_ctx`` (4096).
    * ``default_keep_alive``: seconds (300; ``math.inf`` = forever).
    * ``load_duration_ns``: ``load_duration`` reported for a (re)load (250 ms); ``warm_load_duration_ns``
      else.
    * ``load_delay``: seconds actually slept on a (re)load (0).
    * ``max_loaded_models``: runners kept at once, least recently used evicted (3).
    * ``kv_cache_type``: "f16" | "q8_0" | "q4_0", only for the sizes in ``/api/ps``.
    * ``vram_fraction``: ``size_vram / size`` in ``/api/ps`` (1.0; 0 when ``num_gpu`` is 0).
    * ``thinking_text``: ``message.thinking`` answered when ``think`` is on and the model has the "thinking"
      capability (``think`` on a model without it is a 400, as in Ollama).
    * ``registry``: name -> :class:`FakeModel` that ``/api/pull`` can fetch (default: qwen2.5:0.5b and
      hf.co/ggml-org/gemma-3-270m-it-GGUF:Q8_0); ``pull_error``: an error message ending every pull after
      the first layer. ``pulls`` records the names pulled.

    State for assertions: ``requests``, ``loads``, ``reloads``, ``unloads``, ``load_events``, ``runners``
    (model name -> :class:`Runner`), ``ignored_options`` (unknown option keys, in order),
    ``dropped_on_v1`` (fields dropped by the /v1 layer), ``truncations``.
    """

    name = "fake-ollama"
    inference_paths = frozenset(
        {
            "/api/chat",
            "/api/generate",
            "/api/embed",
            "/api/embeddings",
            "/v1/chat/completions",
            "/v1/completions",
            "/v1/embeddings",
        }
    )
    OWN_KNOBS = (
        "version",
        "default_num_ctx",
        "default_keep_alive",
        "load_duration_ns",
        "warm_load_duration_ns",
        "load_delay",
        "max_loaded_models",
        "kv_cache_type",
        "vram_fraction",
        "thinking_text",
        "registry",
        "pull_error",
    )

    def __init__(
        self,
        *,
        models: list[FakeModel] | None = None,
        version: str = "0.30.2",
        default_num_ctx: int = 4096,
        default_keep_alive: float = 300.0,
        load_duration_ns: int = 250_000_000,
        warm_load_duration_ns: int = 150_000,
        load_delay: float = 0.0,
        max_loaded_models: int = 3,
        kv_cache_type: str = "f16",
        vram_fraction: float = 1.0,
        thinking_text: str | None = None,
        registry: dict[str, FakeModel] | None = None,
        pull_error: str | None = None,
        **common: Any,
    ) -> None:
        self.models: list[FakeModel] = list(models) if models is not None else default_models()
        self.version = version
        self.default_num_ctx = default_num_ctx
        self.default_keep_alive = default_keep_alive
        self.load_duration_ns = load_duration_ns
        self.warm_load_duration_ns = warm_load_duration_ns
        self.load_delay = load_delay
        self.max_loaded_models = max_loaded_models
        self.kv_cache_type = kv_cache_type
        self.vram_fraction = vram_fraction
        self.thinking_text = thinking_text
        #: what ``/api/pull`` can bring in (name -> model), and an error to end pulls with (see ollama_pull)
        self.registry: dict[str, FakeModel] = dict(registry) if registry is not None else default_registry()
        self.pull_error = pull_error
        self.pulls: list[str] = []
        self.runners: dict[str, Runner] = {}
        self.loads = 0
        self.reloads = 0
        self.unloads = 0
        self.truncations = 0
        self.load_events: list[LoadEvent] = []
        self.ignored_options: list[str] = []
        self.dropped_on_v1: list[str] = []
        super().__init__(**common)

    # -- FakeServer hooks -----------------------------------------------------------------------------------

    def knob_names(self) -> tuple[str, ...]:
        return (*super().knob_names(), *self.OWN_KNOBS)

    def reset_state(self) -> None:
        self.runners.clear()
        self.loads = self.reloads = self.unloads = self.truncations = 0
        self.load_events.clear()
        self.ignored_options.clear()
        self.dropped_on_v1.clear()

    def error_body(self, status: int, message: str) -> Any:
        return {"error": message}

    def _register_routes(self) -> None:
        r = self.route
        r("GET", "/", self._root)
        r("HEAD", "/", self._root)
        r("POST", "/api/chat", self._api_chat)
        r("POST", "/api/generate", self._api_generate)
        r("POST", "/api/show", self._api_show)
        r("GET", "/api/tags", self._api_tags)
        r("GET", "/api/ps", self._api_ps)
        r("GET", "/api/version", self._api_version)
        r("POST", "/api/embed", self._api_embed)
        r("POST", "/api/embeddings", self._api_embeddings)
        r("POST", "/api/pull", self._api_pull)
        r("POST", "/v1/chat/completions", self._v1_chat)
        r("POST", "/v1/completions", self._v1_completions)
        r("POST", "/v1/embeddings", self._v1_embeddings)
        r("GET", "/v1/models", self._v1_models)

    # -- properties -----------------------------------------------------------------------------------------

    @property
    def version_tuple(self) -> tuple[int, int, int]:
        return _version_tuple(self.version)

    @property
    def is_v030(self) -> bool:
        return self.version_tuple >= (0, 30, 0)

    def loaded_context(self, model: str) -> int | None:
        """``num_ctx`` of the loaded runner of ``model`` (None when not loaded)."""
        self._expire()
        runner = self.runners.get(self._canonical(model))
        return None if runner is None else int(runner.options["num_ctx"])


@contextlib.contextmanager
def run_fake_ollama(**kw: Any) -> Iterator[FakeOllama]:
    """``with run_fake_ollama(version="0.24.0") as fake: ...`` -- started, and closed afterwards."""
    fake = FakeOllama(**kw)
    fake.start()
    try:
        yield fake
    finally:
        fake.close()


def ndjson_lines(raw: bytes | str) -> list[dict[str, Any]]:
    """Parse an NDJSON body (test helper)."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    return [json.loads(line) for line in text.splitlines() if line.strip()]
