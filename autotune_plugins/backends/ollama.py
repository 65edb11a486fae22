"""Ollama backend: the native ``/api/chat`` and ``/api/generate`` API (NDJSON), never ``/v1`` for tuned calls.

Why native: Ollama's OpenAI layer drops ``options`` and ``keep_alive`` (docs/backend-facts.md#ollamas-openai-layer),
so nothing could be tuned there. What Ollama honours (docs/backend-facts.md#ollama):

- ``num_ctx`` / ``num_batch``: at load; any change reloads the runner, and so does *omitting* a value the
  runner was loaded with. We therefore resend the last value per model (recorded in the plan's trace).
- KV type, flash attention, parallel slots: server environment only (``OLLAMA_KV_CACHE_TYPE``,
  ``OLLAMA_FLASH_ATTENTION``, ``OLLAMA_NUM_PARALLEL``); never sent as options (Ollama ignores unknown keys).
- ``keep_alive`` (seconds, negative = forever) and ``num_keep``: per request.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import re
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from autotune_core.backend import Availability, Backend, Capabilities, EmbeddingResult, KnobScope, KnobSupport
from autotune_core.errors import ModelNotFound, UpstreamError
from autotune_core.markers import hookimpl
from autotune_core.messages import (
    ChatRequest,
    ChatResult,
    LoadedModel,
    Message,
    ModelEntry,
    StreamChunk,
    Timings,
    ToolCall,
    Usage,
)
from autotune_core.modelinfo import ModelInfo
from autotune_core.plan import Plan
from autotune_core.pull_progress import PullEvent

from ._common import (
    checked_embeddings,
    effective_messages,
    error_text,
    json_object,
    make_client,
    max_tokens,
    readable_answer,
    sampling,
    status_error,
    strip_data_url,
)
from ._http import UpstreamClient

DEFAULT_URL = "http://127.0.0.1:11434"

#: what Ollama honours and how (docs/backend-facts.md#ollama); the same for every supported version
_CAPABILITIES = Capabilities(
    dialect="ollama",
    can_tokenize=False,
    can_embed=True,
    prefix_cache=True,
    knobs={
        "num_ctx": KnobSupport(scope=KnobScope.AT_LOAD, reloads=True, how="options.num_ctx"),
        "num_batch": KnobSupport(scope=KnobScope.AT_LOAD, reloads=True, how="options.num_batch"),
        "kv_type": KnobSupport(
            scope=KnobScope.SERVER_ENV, how="OLLAMA_KV_CACHE_TYPE (e.g. q8_0) and restart `ollama serve`"
        ),
        "flash_attn": KnobSupport(
            scope=KnobScope.SERVER_ENV, how="OLLAMA_FLASH_ATTENTION=1 and restart `ollama serve`"
        ),
        "keep_alive": KnobSupport(scope=KnobScope.PER_REQUEST, how="keep_alive"),
        "num_keep": KnobSupport(scope=KnobScope.PER_REQUEST, how="options.num_keep"),
        "parallel": KnobSupport(scope=KnobScope.SERVER_ENV, how="OLLAMA_NUM_PARALLEL and restart `ollama serve`"),
    },
)


#: the ``options`` keys Ollama documents (api/types.go; docs/backend-facts.md#ollama-options), the ones
#: autotune itself may fill
OPTION_KEYS: frozenset[str] = frozenset(
    {
        "num_ctx",
        "num_batch",
        "num_gpu",
        "main_gpu",
        "use_mmap",
        "num_thread",
        "draft_num_predict",
        "num_keep",
        "seed",
        "num_predict",
        "top_k",
        "top_p",
        "min_p",
        "typical_p",
        "repeat_last_n",
        "temperature",
        "repeat_penalty",
        "presence_penalty",
        "frequency_penalty",
        "stop",
    }
)
#: runner options: a different value reloads the model (sched.go needsReload; docs/backend-facts.md#ollama-reloads)
RUNNER_KEYS: tuple[str, ...] = ("num_ctx", "num_batch", "num_gpu", "main_gpu", "use_mmap", "num_thread")
#: autotune's own ``options`` (read by plugins, meaningless to Ollama): not forwarded
AUTOTUNE_OPTIONS: frozenset[str] = frozenset({"kv_type", "kv_cache_type", "force"})
#: top-level request fields we pass through from the client (request.extra) when present
PASSTHROUGH_FIELDS: frozenset[str] = frozenset(
    {"truncate", "shift", "logprobs", "top_logprobs", "suffix", "system", "template", "context"}
)

_DURATION = re.compile(r"^-?\d+(\.\d+)?(ns|us|µs|ms|s|m|h)")


class OllamaSettings(BaseModel):
    """``[backends.ollama]``."""

    model_config = ConfigDict(extra="forbid")

    url: str = DEFAULT_URL
    timeout: float = Field(default=300.0, gt=0)
    #: a ``load_duration`` above this (ms) on an already loaded model counts as a reload
    reload_threshold_ms: float = Field(default=50.0, ge=0)
    #: Ollama's own default keep-alive (OLLAMA_KEEP_ALIVE), to know when a model has expired
    server_keep_alive: float = 300.0
    #: the server's OLLAMA_NUM_PARALLEL (Ollama's API does not report it); unset: this process's
    #: OLLAMA_NUM_PARALLEL when the server is local, else unknown (the queue keeps its default)
    num_parallel: int | None = Field(default=None, ge=1)


@functools.lru_cache(maxsize=16)  # asked on every request (engine, prompt counting); versions are few
def _version_tuple(version: str | None) -> tuple[int, int, int]:
    nums = [int(x) for x in re.findall(r"\d+", version or "")[:3]] + [0, 0, 0]
    return nums[0], nums[1], nums[2]


def _answer_parts(request: ChatRequest, data: dict[str, Any]) -> tuple[str, Any, list[ToolCall]]:
    """Content, thinking and tool calls of an answer or a stream line (/api/generate or /api/chat)."""
    if request.kind == "completion":
        return str(data.get("response") or ""), data.get("thinking"), []
    message = data.get("message") or {}
    return str(message.get("content") or ""), message.get("thinking"), _tool_calls(message.get("tool_calls"))


def _canonical(model: str) -> str:
    return model if ":" in model.rsplit("/", 1)[-1] else f"{model}:latest"


def _ms(ns: Any) -> float | None:
    return ns / 1e6 if isinstance(ns, int | float) else None


def keep_alive_value(value: float | str | None) -> float | str | None:
    """Ollama's ``keep_alive``: a number of seconds (negative = forever) or a Go duration with units.

    A unit-less string ("3600") is a parse error in Ollama, so it becomes a number.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if _DURATION.match(text):
            return text
        try:
            value = float(text)
        except ValueError:
            return text
    if value < 0:
        return -1
    return int(value) if float(value).is_integer() else value


def _keep_alive_to_send(request: ChatRequest, plan: Plan) -> float | str | None:
    """The client's own keep_alive text ("5m") when the plan kept it, else the plan's seconds."""
    pin = plan.pins.get("keep_alive")
    if pin is not None and pin.source == "client" and plan.keep_alive == pin.value:
        return request.keep_alive
    return plan.keep_alive if plan.keep_alive is not None else request.keep_alive


def ollama_message(message: Message) -> dict[str, Any]:
    role = "system" if message.role == "developer" else message.role
    out: dict[str, Any] = {"role": role, "content": message.content}
    if message.images:
        out["images"] = [strip_data_url(image) for image in message.images]
    if message.tool_calls:
        out["tool_calls"] = [
            {"function": {"name": call.name, "arguments": call.arguments_dict()}} for call in message.tool_calls
        ]
    if message.thinking:
        out["thinking"] = message.thinking
    if message.role == "tool":
        if message.name:
            out["tool_name"] = message.name
        if message.tool_call_id:
            out["tool_call_id"] = message.tool_call_id
    return out


def ollama_format(response_format: dict[str, Any] | None) -> Any:
    """OpenAI ``response_format`` → Ollama ``format`` ("json" or a JSON schema)."""
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        schema = response_format.get("json_schema") or {}
        return schema.get("schema", schema) if isinstance(schema, dict) else "json"
    return None


def _tool_calls(raw: Any) -> list[ToolCall]:
    calls = []
    for index, item in enumerate(raw or []):
        function = item.get("function") or {}
        arguments = function.get("arguments")
        calls.append(
            ToolCall(
                id=item.get("id"),
                name=str(function.get("name") or ""),
                arguments=arguments if isinstance(arguments, str) else json.dumps(arguments or {}),
                index=function.get("index", index),
            )
        )
    return calls


class OllamaBackend(Backend):
    """Talks to an Ollama server through its native API."""

    name = "ollama"
    Settings = OllamaSettings
    config: OllamaSettings
    label = "Ollama"

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        super().__init__(settings)  # validates [backends.<name>] with Settings into self.config
        self.url = self.config.url.rstrip("/")
        raw = os.environ.get("OLLAMA_NUM_PARALLEL", "").strip()
        local = urlsplit(self.url).hostname in ("127.0.0.1", "localhost", "::1")
        self._slots = self.config.num_parallel or (int(raw) if local and raw.isdigit() and int(raw) > 0 else None)
        self._client: UpstreamClient | None = None
        self._version: str | None = None
        self._info: dict[str, ModelInfo] = {}
        #: per model: the runner options we last sent (kept stable so Ollama never reloads by omission)
        self._sent_runner: dict[str, dict[str, Any]] = {}
        #: per model: monotonic time until which we believe it is loaded (keep_alive tracking)
        self._loaded_until: dict[str, float] = {}

    # -- plumbing -----------------------------------------------------------------------------------------

    @property
    def client(self) -> UpstreamClient:
        if self._client is None:
            self._client = make_client(self.url, self.config.timeout, label="Ollama")
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _request(self, method: str, path: str, model: str | None = None, **kwargs: Any) -> Any:
        response = await self.client.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise await self._http_error(response.status_code, error_text(response.content), model)
        return json_object(response.content, "Ollama") if response.content else {}

    async def _http_error(self, status: int, message: str, model: str | None) -> Exception:
        if status == 404 and model is not None and "not found" in message.lower():
            try:
                names = [entry.name for entry in await self.list_models()]
            except UpstreamError:
                names = []
            return ModelNotFound(model, names)
        return status_error(status, message, "Ollama")

    # -- facts ----------------------------------------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        return _CAPABILITIES  # the same for every Ollama version we support; asked on every request

    def parallel_slots(self) -> int | None:
        """OLLAMA_NUM_PARALLEL as configured, or as this process sees it when Ollama runs on this machine."""
        return self._slots

    @property
    def engine(self) -> str:
        """Since v0.30 GGUF models run in an upstream llama-server child; before, in Ollama's Go runners."""
        return "llama-server" if _version_tuple(self._version) >= (0, 30, 0) else "ollama-runner"

    @property
    def prompt_count_is_full(self) -> bool:
        """``prompt_eval_count`` includes cached tokens on every version except exactly v0.30.0."""
        return _version_tuple(self._version)[:3] != (0, 30, 0)

    async def refresh(self) -> None:
        self._version = None
        await self.version()

    async def version(self) -> str | None:
        if self._version is None:
            data = await self._request("GET", "/api/version")
            self._version = str(data.get("version") or "") or None
        return self._version

    async def available(self) -> Availability:
        try:
            version = await self.version()
        except UpstreamError as exc:
            return Availability(ok=False, reason=exc.message)
        return Availability(ok=True, version=version)

    async def list_models(self) -> list[ModelEntry]:
        data = await self._request("GET", "/api/tags")
        out = []
        for item in data.get("models") or []:
            details = item.get("details") or {}
            name = str(item.get("name") or item.get("model"))
            aliases = [name[: -len(":latest")]] if name.endswith(":latest") else []
            out.append(
                ModelEntry(
                    name=name,
                    backend=self.name,
                    size_bytes=item.get("size"),
                    family=details.get("family"),
                    parameter_size=details.get("parameter_size"),
                    quantization=details.get("quantization_level"),
                    context_length=details.get("context_length"),
                    modified_at=item.get("modified_at"),
                    digest=item.get("digest"),
                    aliases=aliases,
                    upstream=item,
                )
            )
        return out

    async def native_show(self, model: str, *, verbose: bool = False) -> dict[str, Any] | None:
        """Ollama's own ``/api/show`` answer, every field (modelfile, template, license, model_info...)."""
        body: dict[str, Any] = {"model": model}
        if verbose:
            body["verbose"] = True
        data: dict[str, Any] = await self._request("POST", "/api/show", model=model, json=body)
        return data

    async def model_info(self, model: str) -> ModelInfo:
        key = _canonical(model)
        cached = self._info.get(key)
        if cached is not None:
            return cached
        data = await self._request("POST", "/api/show", model=model, json={"model": model})
        kv = data.get("model_info") or {}
        arch = kv.get("general.architecture")
        if arch and kv.get(f"{arch}.attention.head_count_kv") == []:
            # per-layer arrays longer than 5 are emptied unless verbose (routes.go); ask once, cache the result
            verbose = await self._request("POST", "/api/show", model=model, json={"model": model, "verbose": True})
            kv = verbose.get("model_info") or kv
        info = ModelInfo.from_gguf(model, kv)
        details = data.get("details") or {}
        info.quantization = details.get("quantization_level")
        info.family = details.get("family")
        info.capabilities = list(data.get("capabilities") or [])
        try:
            for entry in await self.list_models():
                if _canonical(entry.name) == key:
                    info.size_bytes = entry.size_bytes
        except UpstreamError:
            pass
        self._info[key] = info
        return info

    async def loaded_models(self) -> list[LoadedModel]:
        data = await self._request("GET", "/api/ps")
        return [
            LoadedModel(
                name=str(item.get("name")),
                backend=self.name,
                size_bytes=item.get("size"),
                size_vram_bytes=item.get("size_vram"),
                context_length=item.get("context_length"),
                expires_at=item.get("expires_at"),
                upstream=item,
            )
            for item in data.get("models") or []
        ]

    async def unload(self, model: str) -> bool:
        await self._request(
            "POST", "/api/generate", model=model, json={"model": model, "keep_alive": 0, "stream": False}
        )
        self._loaded_until.pop(_canonical(model), None)
        self._sent_runner.pop(_canonical(model), None)
        return True

    async def pull(self, model: str) -> AsyncIterator[PullEvent]:
        """``POST /api/pull``: Ollama's NDJSON progress lines as :class:`PullEvent`; an ``{"error": ...}`` line
        (or an HTTP error) raises :class:`UpstreamError` with Ollama's message."""
        async with self.client.stream("POST", "/api/pull", json={"model": model, "stream": True}) as response:
            if response.status_code >= 400:
                await response.aread()
                raise status_error(response.status_code, error_text(response.content), "Ollama")
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                data = json_object(line, "Ollama")
                if "error" in data:
                    raise UpstreamError(f"Ollama could not pull {model}: {data['error']}")
                with readable_answer("Ollama"):
                    event = PullEvent(
                        status=str(data.get("status") or ""),
                        digest=data.get("digest"),
                        total=data.get("total"),
                        completed=data.get("completed"),
                    )
                yield event
                if event.status == "success":
                    return
        raise UpstreamError(f"Ollama ended the pull of {model} without success")

    async def embed(self, model: str, inputs: list[str]) -> EmbeddingResult:
        body: dict[str, Any] = {"model": model, "input": inputs}
        runner = self._sent_runner.get(_canonical(model))
        if runner:
            body["options"] = dict(runner)  # embedding without the loaded num_ctx would reload (ollama#6148)
        data = await self._request("POST", "/api/embed", model=model, json=body)
        with readable_answer("Ollama"):
            result = EmbeddingResult(
                vectors=data.get("embeddings") or [], prompt_tokens=int(data.get("prompt_eval_count") or 0), model=model
            )
        return checked_embeddings(result, len(inputs), "Ollama")

    # -- translation ------------------------------------------------------------------------------------------

    def _runner_options(self, request: ChatRequest, plan: Plan, *, commit: bool) -> dict[str, Any]:
        """num_ctx/num_batch from the plan, or the values this model was last sent (never omitted)."""
        key = _canonical(request.model)
        previous = self._sent_runner.get(key, {})
        runner: dict[str, Any] = {}
        for knob in ("num_ctx", "num_batch", "num_thread"):
            value = getattr(plan, knob)
            if value is None and knob in previous:
                value = previous[knob]
                if commit:
                    plan.set(
                        self.name,
                        knob,
                        value,
                        f"resent the {knob} {request.model} was loaded with; omitting it makes Ollama "
                        "reload the model at its default",
                    )
            if value is not None:
                runner[knob] = int(value)
        if commit and runner:
            self._sent_runner[key] = {**previous, **runner}
        return runner

    def wire_options(self, plan: Plan, request: ChatRequest | None = None) -> dict[str, Any]:
        request = request or ChatRequest(model=plan.model, messages=plan.messages)
        return self._options(request, plan, commit=False)

    def _options(self, request: ChatRequest, plan: Plan, *, commit: bool) -> dict[str, Any]:
        """The client's options as sent (every key, known to us or not), then the plan's decisions.

        Under the precedence rule the plan already holds the client's explicit values, so what autotune
        writes here only fills what the client left open (or, with ``client_overrides = "tune"``, replaces it).
        """
        options: dict[str, Any] = {
            key: value for key, value in request.options.items() if key not in AUTOTUNE_OPTIONS and value is not None
        }
        options.update(sampling(request, plan))
        options.update(self._runner_options(request, plan, commit=commit))
        if plan.num_keep is not None:
            options["num_keep"] = int(plan.num_keep)
        limit = max_tokens(request, plan)
        if limit is not None:
            options["num_predict"] = limit
        if request.stop:
            options["stop"] = list(request.stop)
        return options

    def build_body(self, request: ChatRequest, plan: Plan, *, stream: bool, commit: bool = True) -> dict[str, Any]:
        """The exact JSON sent to ``/api/chat`` (or ``/api/generate`` for completions)."""
        body: dict[str, Any] = {key: value for key, value in request.extra.items() if key in PASSTHROUGH_FIELDS}
        body["model"] = request.model
        if request.kind == "completion":
            body["prompt"] = request.prompt or ""
            if request.raw:
                body["raw"] = True
        else:
            body["messages"] = [ollama_message(m) for m in effective_messages(request, plan)]
            if request.tools:
                body["tools"] = request.tools
        body["stream"] = stream
        options = self._options(request, plan, commit=commit)
        if options:
            body["options"] = options
        fmt = ollama_format(request.response_format)
        if fmt is None and "format" in request.extra:
            fmt = request.extra["format"]
        if fmt is not None:
            body["format"] = fmt
        keep_alive = keep_alive_value(_keep_alive_to_send(request, plan))
        if keep_alive is not None:
            body["keep_alive"] = keep_alive
        if request.think is not None:
            body["think"] = request.think
        return body

    def _path(self, request: ChatRequest) -> str:
        return "/api/generate" if request.kind == "completion" else "/api/chat"

    # -- results ----------------------------------------------------------------------------------------------

    def _timings(self, model: str, data: dict[str, Any], was_loaded: bool) -> Timings:
        load = _ms(data.get("load_duration"))
        prompt = _ms(data.get("prompt_eval_duration"))
        reloaded = bool(was_loaded and load is not None and load > self.config.reload_threshold_ms)
        if reloaded:
            self.reloads += 1
        ttft = (load or 0.0) + (prompt or 0.0) if load is not None or prompt is not None else None
        return Timings(
            load_ms=load,
            prompt_ms=prompt,
            decode_ms=_ms(data.get("eval_duration")),
            ttft_ms=ttft,
            total_ms=_ms(data.get("total_duration")),
            reloaded=reloaded,
        )

    def _was_loaded(self, model: str) -> bool:
        return self._loaded_until.get(_canonical(model), 0.0) > time.monotonic()

    def _mark_loaded(self, model: str, body: dict[str, Any]) -> None:
        keep = body.get("keep_alive", self.config.server_keep_alive)
        seconds = keep if isinstance(keep, int | float) else self.config.server_keep_alive
        key = _canonical(model)
        if seconds == 0:
            self._loaded_until.pop(key, None)
            return
        self._loaded_until[key] = math.inf if seconds < 0 else time.monotonic() + float(seconds)

    def _usage(self, data: dict[str, Any]) -> Usage:
        return Usage(
            prompt_tokens=int(data.get("prompt_eval_count") or 0), completion_tokens=int(data.get("eval_count") or 0)
        )

    def _raw(self, data: dict[str, Any]) -> dict[str, Any]:
        raw = {key: value for key, value in data.items() if key not in ("message", "response", "context")}
        raw["engine"] = self.engine
        raw["prompt_eval_count_includes_cached"] = self.prompt_count_is_full
        return raw

    async def _ensure_version(self) -> None:
        if self._version is None:
            with contextlib.suppress(UpstreamError):  # the request itself will report the real problem
                await self.version()

    async def chat(self, request: ChatRequest, plan: Plan) -> ChatResult:
        await self._ensure_version()
        body = self.build_body(request, plan, stream=False)
        was_loaded = self._was_loaded(request.model)
        data = await self._request("POST", self._path(request), model=request.model, json=body)
        self._mark_loaded(request.model, body)
        with readable_answer("Ollama"):
            content, thinking, calls = _answer_parts(request, data)
            finish = "tool_calls" if calls else data.get("done_reason") or "stop"
            return ChatResult(
                model=request.model,
                backend=self.name,
                content=content,
                thinking=thinking,
                tool_calls=calls,
                finish_reason=finish,
                usage=self._usage(data),
                timings=self._timings(request.model, data, was_loaded),
                raw=self._raw(data),
            )

    async def stream_chat(self, request: ChatRequest, plan: Plan) -> AsyncIterator[StreamChunk]:
        await self._ensure_version()
        body = self.build_body(request, plan, stream=True)
        was_loaded = self._was_loaded(request.model)
        saw_tools = False
        async with self.client.stream("POST", self._path(request), json=body) as response:
            if response.status_code >= 400:
                await response.aread()
                raise await self._http_error(response.status_code, error_text(response.content), request.model)
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                data = json_object(line, "Ollama")
                if "error" in data:
                    raise UpstreamError(f"Ollama: {data['error']}")
                with readable_answer("Ollama"):
                    content, thinking, calls = _answer_parts(request, data)
                    saw_tools = saw_tools or bool(calls)
                    done = bool(data.get("done"))
                    chunk = None
                    if done:
                        self._mark_loaded(request.model, body)
                        finish = "tool_calls" if saw_tools else data.get("done_reason") or "stop"
                        chunk = StreamChunk(
                            content=content,
                            thinking=thinking or None,
                            tool_calls=calls,
                            done=True,
                            finish_reason=finish,
                            usage=self._usage(data),
                            timings=self._timings(request.model, data, was_loaded),
                        )
                    elif content or thinking or calls:
                        chunk = StreamChunk(content=content, thinking=thinking or None, tool_calls=calls)
                if chunk is not None:
                    yield chunk
                if done:
                    return
        raise UpstreamError("Ollama ended the stream without a final (done) message")


class OllamaPlugin:
    """Ollama backend: native /api/chat with per-model stable num_ctx; KV type and flash attention as advice."""

    @hookimpl
    def register_backends(self, register: Any) -> None:
        register(OllamaBackend)
