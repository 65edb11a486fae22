"""(shared, not a plugin) OpenAI-compatible servers, with flavours that know their real knobs
(docs/backend-facts.md#knob-scopes, then the page's section for each server).

- ``llama-server``: everything at server start (advice names the flags); per request ``cache_prompt`` and
  ``n_keep``; the real context from ``/props``; exact token counts via ``/apply-template`` + ``/tokenize``.
- ``lmstudio``: context, flash attention and eval batch at load through ``POST /api/v1/models/load`` (only
  when they change; counted as reloads); ``ttl`` per request; KV quantization only via SDK/GUI.
- ``vllm``: everything at server start.
- ``lemonade``: at load through ``/api/v1/load`` with ``ctx_size`` and ``llamacpp_args``.
- ``generic``: pass-through; no knob is honoured.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from autotune_core.backend import Availability, Backend, Capabilities, EmbeddingResult, KnobScope, KnobSupport
from autotune_core.errors import BackendUnavailable, ModelNotFound, UpstreamError
from autotune_core.messages import ChatRequest, ChatResult, LoadedModel, ModelEntry, StreamChunk, Timings, Usage
from autotune_core.modelinfo import ModelInfo
from autotune_core.plan import Plan

from ._common import (
    ToolCallAssembler,
    checked_embeddings,
    error_text,
    json_object,
    make_client,
    openai_body,
    openai_message,
    openai_tool_calls,
    openai_usage,
    readable_answer,
    sse_data,
    status_error,
)
from ._http import UpstreamClient

#: llama-server (old and new default port), LM Studio, vLLM, Lemonade
PROBE_URLS = (
    "http://127.0.0.1:8080",
    "http://127.0.0.1:9931",
    "http://127.0.0.1:1234",
    "http://127.0.0.1:8000",
    "http://127.0.0.1:13305",
)
FLAVOURS = ("llama-server", "lmstudio", "vllm", "lemonade", "generic")
Flavour = Literal["auto", "llama-server", "lmstudio", "vllm", "lemonade", "generic"]

_S, _L, _P, _U = KnobScope.SERVER_ENV, KnobScope.AT_LOAD, KnobScope.PER_REQUEST, KnobScope.UNSUPPORTED


def _k(scope: KnobScope, how: str = "") -> KnobSupport:
    return KnobSupport(scope=scope, reloads=scope is KnobScope.AT_LOAD, how=how)


#: knob scopes per flavour, as implemented here (docs/backend-facts.md#knob-scopes; docs/backends.md has the table)
FLAVOUR_KNOBS: dict[str, dict[str, KnobSupport]] = {
    "llama-server": {
        "num_ctx": _k(_S, "llama-server -c <n> (LLAMA_ARG_CTX_SIZE)"),
        "kv_type": _k(_S, "llama-server -ctk <type> -ctv <type> (a quantized V cache needs -fa on)"),
        "flash_attn": _k(_S, "llama-server -fa on"),
        "num_batch": _k(_S, "llama-server -b <n> -ub <n>"),
        "parallel": _k(_S, "llama-server -np <n>"),
        "keep_alive": _k(_S, "llama-server --sleep-idle-seconds <n>"),
        "num_keep": _k(_P, "n_keep"),
    },
    "lmstudio": {
        "num_ctx": _k(_L, "POST /api/v1/models/load context_length"),
        "flash_attn": _k(_L, "POST /api/v1/models/load flash_attention"),
        "num_batch": _k(_L, "POST /api/v1/models/load eval_batch_size"),
        "kv_type": _k(
            _U,
            "the REST API rejects KV quantization; set it in the LM Studio GUI or the SDK "
            "(llamaKCacheQuantizationType / llamaVCacheQuantizationType)",
        ),
        "keep_alive": _k(_P, "ttl"),
        "parallel": _k(_U, "lms load --parallel <n>"),
        "num_keep": _k(_U),
    },
    "vllm": {
        "num_ctx": _k(_S, "vllm serve --max-model-len <n>"),
        "kv_type": _k(_S, "vllm serve --kv-cache-dtype fp8"),
        "flash_attn": _k(_S, "vllm serve --attention-backend FLASH_ATTN"),
        "num_batch": _k(_S, "vllm serve --max-num-batched-tokens <n>"),
        "parallel": _k(_S, "vllm serve --max-num-seqs <n>"),
        "keep_alive": _k(_U),
        "num_keep": _k(_U),
    },
    "lemonade": {
        "num_ctx": _k(_L, "/api/v1/load ctx_size"),
        "kv_type": _k(_L, "/api/v1/load llamacpp_args -ctk/-ctv"),
        "flash_attn": _k(_L, "/api/v1/load llamacpp_args --flash-attn on"),
        "num_batch": _k(_L, "/api/v1/load llamacpp_args -b/-ub"),
        "parallel": _k(_L, "/api/v1/load llamacpp_args -np"),
        "keep_alive": _k(_S, "Lemonade evict_idle_timeout"),
        "num_keep": _k(_P, "n_keep (forwarded to llama-server)"),
    },
    "generic": {
        knob: _k(_U) for knob in ("num_ctx", "kv_type", "flash_attn", "num_batch", "parallel", "keep_alive", "num_keep")
    },
}


@functools.cache  # asked on every request; one object per flavour
def flavour_capabilities(flavour: str) -> Capabilities:
    knobs = FLAVOUR_KNOBS.get(flavour, FLAVOUR_KNOBS["generic"])
    return Capabilities(
        dialect=f"openai:{flavour}",
        knobs=dict(knobs),
        can_embed=True,
        can_tokenize=flavour in ("llama-server", "vllm"),
        prefix_cache=flavour != "generic",
    )


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _max_num_seqs(info: Any) -> int | None:
    """vLLM's scheduler limit from ``/server_info``: a nested ``max_num_seqs`` field, or ``max_num_seqs=N``
    inside the config's text form (the shape differs between versions)."""
    if isinstance(info, dict):
        for key, value in info.items():
            found = _count(value) if key == "max_num_seqs" else _max_num_seqs(value)
            if found is not None:
                return found
    elif isinstance(info, str):
        match = re.search(r"max_num_seqs\W{1,3}(\d+)", info)
        return _count(int(match.group(1))) if match else None
    return None


class OpenAISettings(BaseModel):
    """``[backends.openai]``."""

    model_config = ConfigDict(extra="forbid")

    #: one URL, or a list probed in order (default: the well-known local ports)
    url: str | list[str] | None = None
    api_key: str | None = None
    flavour: Flavour = "auto"
    timeout: float = Field(default=300.0, gt=0)
    probe_timeout: float = Field(default=1.0, gt=0)


def lemonade_args(kv_type: str | None, flash_attn: bool | None, num_batch: int | None, parallel: int | None) -> str:
    parts: list[str] = []
    if kv_type:
        parts += ["-ctk", kv_type, "-ctv", kv_type]
    if flash_attn is not None:
        parts += ["--flash-attn", "on" if flash_attn else "off"]
    if num_batch:
        parts += ["-b", str(num_batch), "-ub", str(num_batch)]
    if parallel:
        parts += ["-np", str(parallel)]
    return " ".join(parts)


class OpenAIBackend(Backend):
    """An OpenAI-compatible server; the flavour decides which knobs are honoured and how."""

    name = "openai"
    Settings = OpenAISettings
    config: OpenAISettings
    label = "OpenAI-compatible"
    default_url: str | None = None

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        super().__init__(settings)  # validates [backends.<name>] with Settings into self.config
        url = self.config.url or self.default_url
        self.candidates = [url] if isinstance(url, str) else list(url or PROBE_URLS)
        self.url: str | None = self.candidates[0].rstrip("/") if len(self.candidates) == 1 else None
        self.flavour: str = self.config.flavour if self.config.flavour != "auto" else "generic"
        self._detected = self.config.flavour != "auto"
        self._client: UpstreamClient | None = None
        self._version: str | None = None
        self._slots: int | None = None
        self._load_config: dict[str, dict[str, Any]] = {}
        self._probe_lock = asyncio.Lock()

    # -- plumbing --------------------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}

    @property
    def client(self) -> UpstreamClient:
        if self._client is None:
            if self.url is None:
                raise BackendUnavailable("no OpenAI-compatible server found (call refresh() first)")
            self._client = make_client(self.url, self.config.timeout, self._headers(), label=self.label)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _request(self, method: str, path: str, model: str | None = None, **kwargs: Any) -> Any:
        await self._ensure()
        response = await self.client.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise await self._http_error(response.status_code, error_text(response.content), model)
        return json_object(response.content, self.label) if response.content else {}

    async def _http_error(self, status: int, message: str, model: str | None) -> Exception:
        if status == 404 and model is not None and ("model" in message.lower() or "not found" in message.lower()):
            try:
                names = [entry.name for entry in await self.list_models()]
            except UpstreamError:
                names = []
            if model not in names:
                return ModelNotFound(model, names)
        return status_error(status, message, f"{self.label} ({self.flavour})")

    # -- discovery ----------------------------------------------------------------------------------------------

    async def _ensure(self) -> None:
        if self.url is None or not self._detected:
            await self.refresh()

    async def refresh(self) -> None:
        """Find the first answering URL and detect the flavour from what the server says about itself."""
        async with self._probe_lock:
            for url in self.candidates:
                async with make_client(url, self.config.probe_timeout, self._headers(), label=self.label) as probe:
                    models = await probe.get_json("/v1/models")
                    if models is None:
                        continue
                    if self.url != url.rstrip("/"):
                        await self.aclose()
                        self.url = url.rstrip("/")
                    if not self._detected:
                        self.flavour = await self._detect(probe, models)
                        self._detected = True
                    self._version = await self._server_version(probe)
                    self._slots = await self._server_slots(probe)
                    return
            tried = ", ".join(self.candidates)
            raise BackendUnavailable(f"no OpenAI-compatible server answered at {tried}")

    async def _detect(self, probe: UpstreamClient, models: Any) -> str:
        props = await probe.get_json("/props")
        if isinstance(props, dict) and "default_generation_settings" in props:
            return "llama-server"
        lms = await probe.get_json("/api/v1/models")
        if isinstance(lms, dict) and any(
            isinstance(m, dict) and "loaded_instances" in m for m in lms.get("models") or []
        ):
            return "lmstudio"
        health = await probe.get_json("/api/v1/health")
        if isinstance(health, dict) and "all_models_loaded" in health:
            return "lemonade"
        data = models.get("data") if isinstance(models, dict) else None
        if any(isinstance(m, dict) and "max_model_len" in m for m in data or []):
            return "vllm"
        return "generic"

    async def _server_slots(self, probe: UpstreamClient) -> int | None:
        """Requests the server runs at once, where it says so: llama-server's ``/props`` ``total_slots``
        (``-np``); vLLM's ``max_num_seqs`` in ``/server_info`` (served only with ``VLLM_SERVER_DEV_MODE=1``)."""
        if self.flavour == "llama-server":
            props = await probe.get_json("/props")
            return _count(props.get("total_slots")) if isinstance(props, dict) else None
        if self.flavour == "vllm":
            return _max_num_seqs(await probe.get_json("/server_info"))
        return None

    def parallel_slots(self) -> int | None:
        return self._slots

    async def _server_version(self, probe: UpstreamClient) -> str | None:
        if self.flavour == "llama-server":
            props = await probe.get_json("/props")
            return str(props.get("build_info")) if isinstance(props, dict) and props.get("build_info") else None
        if self.flavour == "vllm":
            data = await probe.get_json("/version")
            return str(data.get("version")) if isinstance(data, dict) else None
        if self.flavour == "lemonade":
            data = await probe.get_json("/api/v1/health")
            return str(data.get("version")) if isinstance(data, dict) and data.get("version") else None
        return None

    def capabilities(self) -> Capabilities:
        return flavour_capabilities(self.flavour)

    async def available(self) -> Availability:
        try:
            await self._ensure()
        except UpstreamError as exc:
            return Availability(ok=False, reason=exc.message)
        return Availability(ok=True, version=self._version)

    async def version(self) -> str | None:
        await self._ensure()
        return self._version

    # -- introspection ---------------------------------------------------------------------------------------------

    async def list_models(self) -> list[ModelEntry]:
        data = await self._request("GET", "/v1/models")
        out = []
        for item in data.get("data") or []:
            meta = item.get("meta") or {}
            out.append(
                ModelEntry(
                    name=str(item.get("id")),
                    backend=self.name,
                    size_bytes=meta.get("size"),
                    context_length=item.get("max_model_len") or meta.get("n_ctx_train"),
                )
            )
        return out

    async def _props(self) -> dict[str, Any]:
        data = await self._request("GET", "/props")
        return data if isinstance(data, dict) else {}

    async def model_info(self, model: str) -> ModelInfo:
        entries = {entry.name: entry for entry in await self.list_models()}
        entry = entries.get(model)
        info = ModelInfo(
            name=model,
            context_length=entry.context_length if entry else None,
            size_bytes=entry.size_bytes if entry else None,
        )
        if self.flavour == "lmstudio":
            data = await self._request("GET", "/api/v1/models")
            for item in data.get("models") or []:
                if item.get("key") == model:
                    info.context_length = item.get("max_context_length")
                    info.architecture = str(item.get("architecture") or "unknown")
                    info.quantization = (item.get("quantization") or {}).get("name")
        return info

    async def loaded_models(self) -> list[LoadedModel]:
        if self.flavour == "llama-server":
            props = await self._props()
            settings = props.get("default_generation_settings") or {}
            name = str(props.get("model_alias") or props.get("model_path") or "model")
            return [LoadedModel(name=name, backend=self.name, context_length=settings.get("n_ctx"))]
        if self.flavour == "lmstudio":
            data = await self._request("GET", "/api/v1/models")
            return [
                LoadedModel(
                    name=str(inst.get("id") or item.get("key")),
                    backend=self.name,
                    size_bytes=item.get("size_bytes"),
                    context_length=(inst.get("config") or {}).get("context_length"),
                )
                for item in data.get("models") or []
                for inst in item.get("loaded_instances") or []
            ]
        if self.flavour == "lemonade":
            data = await self._request("GET", "/api/v1/health")
            return [
                LoadedModel(
                    name=str(item.get("model_name")),
                    backend=self.name,
                    context_length=_ctx_from_launch(item.get("launch_command")),
                )
                for item in data.get("all_models_loaded") or []
            ]
        if self.flavour == "vllm":
            return [
                LoadedModel(name=m.name, backend=self.name, context_length=m.context_length)
                for m in await self.list_models()
            ]
        return []

    async def unload(self, model: str) -> bool:
        if self.flavour == "lmstudio":
            await self._request("POST", "/api/v1/models/unload", model=model, json={"instance_id": model})
        elif self.flavour == "lemonade":
            await self._request("POST", "/api/v1/unload", model=model, json={"model_name": model})
        else:
            return False
        self._load_config.pop(model, None)
        return True

    async def count_tokens(self, model: str, request: ChatRequest, plan: Plan) -> int | None:
        messages = [openai_message(m) for m in (plan.messages or request.messages)]
        if self.flavour == "vllm":
            data = await self._request("POST", "/tokenize", json={"model": model, "messages": messages})
            return int(data.get("count") or len(data.get("tokens") or []))
        if self.flavour != "llama-server":
            return None
        try:
            prompt = str((await self._request("POST", "/apply-template", json={"messages": messages})).get("prompt"))
        except UpstreamError:  # older builds: approximate the template
            prompt = (
                "".join(f"<|{m['role']}|>\n{m.get('content') or ''}<|end|>\n" for m in messages) + "<|assistant|>\n"
            )
        data = await self._request("POST", "/tokenize", json={"content": prompt, "add_special": True})
        return len(data.get("tokens") or [])

    async def embed(self, model: str, inputs: list[str]) -> EmbeddingResult:
        data = await self._request("POST", "/v1/embeddings", model=model, json={"model": model, "input": inputs})
        with readable_answer(self.label):
            vectors = [item["embedding"] for item in sorted(data.get("data") or [], key=lambda d: d.get("index", 0))]
            usage = data.get("usage") or {}
            result = EmbeddingResult(vectors=vectors, prompt_tokens=int(usage.get("prompt_tokens") or 0), model=model)
        return checked_embeddings(result, len(inputs), self.label)

    # -- at-load knobs ---------------------------------------------------------------------------------------------

    def load_request(self, model: str, plan: Plan) -> tuple[str, dict[str, Any]] | None:
        """The load call this plan needs on an at-load flavour (None: nothing to set)."""
        if self.flavour == "lmstudio":
            body: dict[str, Any] = {"model": model}
            if plan.num_ctx is not None:
                body["context_length"] = plan.num_ctx
            if plan.flash_attn is not None:
                body["flash_attention"] = plan.flash_attn
            if plan.num_batch is not None:
                body["eval_batch_size"] = plan.num_batch
            return ("/api/v1/models/load", body) if len(body) > 1 else None
        if self.flavour == "lemonade":
            body = {"model_name": model}
            if plan.num_ctx is not None:
                body["ctx_size"] = plan.num_ctx
            args = lemonade_args(plan.kv_type, plan.flash_attn, plan.num_batch, plan.parallel)
            if args:
                body["llamacpp_args"] = args
            return ("/api/v1/load", body) if len(body) > 1 else None
        return None

    async def _current_config(self, model: str) -> dict[str, Any] | None:
        """What the server has loaded for ``model`` now, in the load call's terms (None: not loaded)."""
        if self.flavour == "lmstudio":
            data = await self._request("GET", "/api/v1/models")
            for item in data.get("models") or []:
                for inst in item.get("loaded_instances") or []:
                    if model in (inst.get("id"), item.get("key")):
                        return dict(inst.get("config") or {})
        elif self.flavour == "lemonade":
            data = await self._request("GET", "/api/v1/health")
            for item in data.get("all_models_loaded") or []:
                if item.get("model_name") == model:
                    return dict(item.get("recipe_options") or {})
        return None

    async def ensure_loaded(self, model: str, plan: Plan) -> float | None:
        """Apply at-load knobs; returns the reload time (ms) when a reload happened, else None."""
        wanted = self.load_request(model, plan)
        if wanted is None:
            return None
        path, body = wanted
        settings = {k: v for k, v in body.items() if k not in ("model", "model_name")}
        known = self._load_config.get(model)
        if known is None:
            known = await self._current_config(model)
        if known is not None and all(known.get(k) == v for k, v in settings.items()):
            self._load_config[model] = known
            return None
        started = asyncio.get_running_loop().time()
        await self._request("POST", path, model=model, json=body)
        took = (asyncio.get_running_loop().time() - started) * 1000
        self._load_config[model] = {**(known or {}), **settings}
        if known is not None:
            self.reloads += 1
            plan.record(self.name, "reload", None, took, f"{self.flavour}: load settings changed ({settings})")
            return took
        return None

    # -- requests ---------------------------------------------------------------------------------------------------

    def build_body(self, request: ChatRequest, plan: Plan, *, stream: bool) -> dict[str, Any]:
        body = openai_body(request, plan, stream=stream)
        if self.flavour in ("llama-server", "lemonade"):
            body.setdefault("cache_prompt", True)
            if plan.num_keep is not None:
                body["n_keep"] = plan.num_keep
        if self.flavour == "lmstudio" and plan.keep_alive is not None and plan.keep_alive > 0:
            body["ttl"] = int(plan.keep_alive)
        return body

    def wire_options(self, plan: Plan, request: ChatRequest | None = None) -> dict[str, Any]:
        body = self.build_body(request or ChatRequest(model=plan.model), plan, stream=False)
        return {k: v for k, v in body.items() if k not in ("model", "messages", "stream")}

    def _path(self, request: ChatRequest) -> str:
        return "/v1/completions" if request.kind == "completion" else "/v1/chat/completions"

    def _timings(self, data: dict[str, Any], load_ms: float | None) -> Timings:
        found = data.get("timings")
        raw: dict[str, Any] = found if isinstance(found, dict) else {}
        prompt, decode = raw.get("prompt_ms"), raw.get("predicted_ms")
        ttft = (load_ms or 0.0) + prompt if prompt is not None else None
        return Timings(load_ms=load_ms, prompt_ms=prompt, decode_ms=decode, ttft_ms=ttft, reloaded=load_ms is not None)

    @staticmethod
    def _with_cache(usage: Usage | None, data: dict[str, Any]) -> Usage | None:
        timings = data.get("timings")
        if usage is not None and usage.cached_tokens is None and isinstance(timings, dict) and "cache_n" in timings:
            usage.cached_tokens = int(timings["cache_n"])
        return usage

    async def chat(self, request: ChatRequest, plan: Plan) -> ChatResult:
        await self._ensure()
        load_ms = await self.ensure_loaded(request.model, plan)
        data = await self._request(
            "POST", self._path(request), model=request.model, json=self.build_body(request, plan, stream=False)
        )
        with readable_answer(self.label):
            choice = (data.get("choices") or [{}])[0]
            if request.kind == "completion":
                content, calls = str(choice.get("text") or ""), []
            else:
                message = choice.get("message") or {}
                content, calls = str(message.get("content") or ""), openai_tool_calls(message.get("tool_calls"))
            usage = self._with_cache(openai_usage(data.get("usage")), data) or Usage()
            return ChatResult(
                model=request.model,
                backend=self.name,
                content=content,
                tool_calls=calls,
                finish_reason=choice.get("finish_reason") or "stop",
                usage=usage,
                timings=self._timings(data, load_ms),
                raw={"flavour": self.flavour},
            )

    async def stream_chat(self, request: ChatRequest, plan: Plan) -> AsyncIterator[StreamChunk]:
        await self._ensure()
        load_ms = await self.ensure_loaded(request.model, plan)
        body = self.build_body(request, plan, stream=True)
        tools = ToolCallAssembler()
        finish: str | None = None
        usage: Usage | None = None
        last: dict[str, Any] = {}
        async with self.client.stream("POST", self._path(request), json=body) as response:
            if response.status_code >= 400:
                await response.aread()
                raise await self._http_error(response.status_code, error_text(response.content), request.model)
            events = 0
            async for payload in sse_data(response):
                events += 1
                if payload.strip() == "[DONE]":
                    break
                data = json_object(payload, self.label)
                if "error" in data:
                    raise UpstreamError(f"{self.label} ({self.flavour}): {error_text(json.dumps(data))}")
                with readable_answer(self.label):
                    if data.get("usage"):
                        usage = self._with_cache(openai_usage(data["usage"]), data)
                    if "timings" in data:
                        last = data
                    texts, finished = _read_choices(data.get("choices") or [], request.kind, tools)
                    finish = finished or finish
                for text in texts:
                    yield StreamChunk(content=text)
        if not events:
            raise UpstreamError(f"{self.label} sent a stream without a single event")
        with readable_answer(self.label):
            usage = self._with_cache(usage, last) if usage is not None else None
            final = StreamChunk(
                done=True,
                tool_calls=tools.calls(),
                finish_reason=finish or "stop",
                usage=usage or Usage(),
                timings=self._timings(last, load_ms),
            )
        yield final


def _read_choices(choices: list[Any], kind: str, tools: ToolCallAssembler) -> tuple[list[str], str | None]:
    """The text pieces and the last finish reason of one stream event's choices; tool-call deltas go to ``tools``.

    A chat stream carries text in ``delta.content``, a completion stream in ``text``.
    """
    texts: list[str] = []
    finish: str | None = None
    for choice in choices:
        delta = choice.get("delta") or {}
        content = delta.get("content") if kind == "chat" else choice.get("text")
        if delta.get("tool_calls"):
            tools.add(delta["tool_calls"])
        if choice.get("finish_reason"):
            finish = choice["finish_reason"]
        if content:
            texts.append(str(content))
    return texts, finish


def _ctx_from_launch(command: Any) -> int | None:
    parts = str(command or "").split()
    for flag in ("--ctx-size", "-c"):
        if flag in parts[:-1]:
            try:
                return int(parts[parts.index(flag) + 1])
            except ValueError:
                return None
    return None
