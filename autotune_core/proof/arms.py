"""The arms of a proof: autotune's default stack, autotune with every optimization off, and the backend direct.

- ``autotune``: a :class:`PluginHost` as the user has it (every enabled plugin), through the Pipeline.
- ``plain``: a host with only the essential core and the backend plugins (``AUTOTUNE_LOAD_PLUGINS`` set to
  them), through the same Pipeline: what autotune's machinery costs without any optimization.
- ``direct``: the model server's own API with no autotune at all, where the backend is a server (Ollama's
  native ``/api/chat``, an OpenAI-compatible ``/v1/chat/completions``). Not for the embedded engine.

Every arm sends the client fields the proof sets (temperature 0, a seed, max_tokens) and nothing else, so
arms differ only by what autotune decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from ..backend import Backend
from ..config import load_settings
from ..host import PluginHost
from ..messages import ChatRequest
from ..modelinfo import ModelInfo
from ..pipeline import Pipeline
from .scenarios import Step

#: fields every arm's requests carry (the client's own choices: greedy, reproducible, bounded)
TEMPERATURE = 0.0
SEED = 7
#: a load_duration above this on a loaded model counts as a reload (direct Ollama arm; as the backend does)
RELOAD_MS = 50.0


@dataclass
class Sample:
    """One timed request of one arm."""

    ttft_ms: float | None = None
    total_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens_per_s: float | None = None
    text: str = ""
    tool_calls: int = 0
    reloaded: bool | None = None
    num_ctx: int | None = None
    kv_type: str | None = None
    cached_tokens: int | None = None
    error: str | None = None
    #: autotune's own truncation flag (prefix-protect), when present
    flagged_truncated: bool = False


class Arm(Protocol):
    name: str
    label: str
    backend_name: str

    async def send(self, step: Step, max_tokens: int) -> Sample: ...
    async def default_context(self) -> int | None: ...
    async def close(self) -> None: ...


def _rate(tokens: int, decode_ms: float | None, first: float | None, end: float) -> float | None:
    if decode_ms and tokens > 0:
        return tokens / (decode_ms / 1000)
    if first is not None and end > first and tokens > 1:
        return (tokens - 1) / (end - first)
    return None


class PipelineArm:
    """autotune (default stack) or plain (no optimizations): the Pipeline on a host of its own."""

    def __init__(self, name: str, label: str, host: PluginHost, model: str) -> None:
        self.name, self.label, self.host, self.model = name, label, host, model
        self.pipeline = Pipeline(host)
        self.backend: Backend | None = None
        self.info: ModelInfo | None = None
        self.backend_name = ""

    async def resolve(self) -> None:
        backend, upstream = await self.pipeline.resolver.resolve(self.model)
        self.backend, self.model, self.backend_name = backend, upstream, backend.name
        self.info = await self.pipeline.model_info(backend, upstream)

    async def loaded(self) -> tuple[int | None, str | None]:
        """(context, KV type) the backend reports for the loaded model."""
        assert self.backend is not None
        with contextlib.suppress(Exception):
            for entry in await asyncio.wait_for(self.backend.loaded_models(), 5):
                if entry.name == self.model or entry.name.removesuffix(":latest") == self.model.removesuffix(":latest"):
                    return entry.context_length, entry.kv_type
        return None, None

    async def default_context(self) -> int | None:
        return (await self.loaded())[0]

    async def send(self, step: Step, max_tokens: int) -> Sample:
        request = ChatRequest(
            model=self.model,
            messages=list(step.messages),
            tools=list(step.tools),
            stream=True,
            max_tokens=max_tokens,
            temperature=TEMPERATURE,
            seed=SEED,
        )
        sample = Sample()
        started = time.perf_counter()
        first: float | None = None
        text: list[str] = []
        decode_ms: float | None = None
        try:
            prepared = await self.pipeline.prepare(request)
            async for chunk in self.pipeline.stream(prepared):
                if (chunk.content or chunk.tool_calls) and first is None:
                    first = time.perf_counter()
                text.append(chunk.content)
                sample.tool_calls += len(chunk.tool_calls)
                if chunk.done:
                    if chunk.usage is not None:
                        sample.prompt_tokens = chunk.usage.prompt_tokens
                        sample.completion_tokens = chunk.usage.completion_tokens
                        sample.cached_tokens = chunk.usage.cached_tokens
                    if chunk.timings is not None:
                        sample.reloaded = chunk.timings.reloaded
                        decode_ms = chunk.timings.decode_ms
        except Exception as exc:
            sample.error = f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"[:300]
            sample.total_ms = (time.perf_counter() - started) * 1000
            return sample
        end = time.perf_counter()
        plan = prepared.plan
        sample.ttft_ms = (first - started) * 1000 if first is not None else None
        sample.total_ms = (end - started) * 1000
        sample.text = "".join(text)
        sample.tokens_per_s = _rate(sample.completion_tokens, decode_ms, first, end)
        loaded_ctx, loaded_kv = await self.loaded()
        sample.num_ctx = loaded_ctx or plan.num_ctx
        sample.kv_type = loaded_kv or plan.kv_type
        sample.flagged_truncated = bool(plan.flags.get("truncated"))
        return sample

    async def close(self) -> None:
        await self.host.stop()


class DirectArm:
    """The model server's own API, no autotune: what the user had before."""

    label = "backend direct"

    def __init__(self, backend_name: str, url: str, model: str, *, loaded_from: PipelineArm) -> None:
        self.name, self.backend_name, self.url, self.model = "direct", backend_name, url.rstrip("/"), model
        self.client = httpx.AsyncClient(base_url=self.url, timeout=httpx.Timeout(600.0, connect=5.0))
        self._peer = loaded_from
        self._was_loaded = False

    async def default_context(self) -> int | None:
        return await self._peer.default_context()

    def _messages(self, step: Step) -> list[dict[str, Any]]:
        out = []
        for m in step.messages:
            item: dict[str, Any] = {"role": m.role, "content": m.content}
            if m.tool_calls:
                if self.backend_name == "ollama":
                    item["tool_calls"] = [
                        {"function": {"name": c.name, "arguments": c.arguments_dict()}} for c in m.tool_calls
                    ]
                else:
                    item["tool_calls"] = [
                        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                        for c in m.tool_calls
                    ]
            if m.tool_call_id and self.backend_name != "ollama":
                item["tool_call_id"] = m.tool_call_id
            out.append(item)
        return out

    async def send(self, step: Step, max_tokens: int) -> Sample:
        if self.backend_name == "ollama":
            return await self._ollama(step, max_tokens)
        return await self._openai(step, max_tokens)

    async def _ollama(self, step: Step, max_tokens: int) -> Sample:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": self._messages(step),
            "stream": True,
            "options": {"temperature": TEMPERATURE, "seed": SEED, "num_predict": max_tokens},
        }
        if step.tools:
            body["tools"] = step.tools
        sample = Sample()
        started = time.perf_counter()
        first: float | None = None
        text: list[str] = []
        try:
            async with self.client.stream("POST", "/api/chat", json=body) as response:
                if response.status_code != 200:
                    sample.error = f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
                    return sample
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    data = json.loads(line)
                    message = data.get("message") or {}
                    if (message.get("content") or message.get("tool_calls")) and first is None:
                        first = time.perf_counter()
                    text.append(message.get("content") or "")
                    sample.tool_calls += len(message.get("tool_calls") or [])
                    if data.get("done"):
                        sample.prompt_tokens = int(data.get("prompt_eval_count") or 0)
                        sample.completion_tokens = int(data.get("eval_count") or 0)
                        load_ms = (data.get("load_duration") or 0) / 1e6
                        sample.reloaded = self._was_loaded and load_ms > RELOAD_MS
                        eval_ns = data.get("eval_duration")
                        sample.tokens_per_s = sample.completion_tokens / (eval_ns / 1e9) if eval_ns else None
        except (httpx.HTTPError, ValueError) as exc:
            sample.error = f"{type(exc).__name__}: {exc}"[:300]
            return sample
        self._was_loaded = True
        return await self._loaded(self._finish(sample, started, first, text))

    async def _openai(self, step: Step, max_tokens: int) -> Sample:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": self._messages(step),
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": TEMPERATURE,
            "seed": SEED,
            "max_tokens": max_tokens,
        }
        if step.tools:
            body["tools"] = step.tools
        sample = Sample()
        started = time.perf_counter()
        first: float | None = None
        text: list[str] = []
        try:
            async with self.client.stream("POST", "/v1/chat/completions", json=body) as response:
                if response.status_code != 200:
                    sample.error = f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
                    return sample
                async for line in response.aiter_lines():
                    if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                        continue
                    data = json.loads(line[5:])
                    for choice in data.get("choices") or []:
                        delta = choice.get("delta") or {}
                        if (delta.get("content") or delta.get("tool_calls")) and first is None:
                            first = time.perf_counter()
                        text.append(delta.get("content") or "")
                        sample.tool_calls += len(delta.get("tool_calls") or [])
                    usage = data.get("usage") or {}
                    if usage:
                        sample.prompt_tokens = int(usage.get("prompt_tokens") or 0)
                        sample.completion_tokens = int(usage.get("completion_tokens") or 0)
        except (httpx.HTTPError, ValueError) as exc:
            sample.error = f"{type(exc).__name__}: {exc}"[:300]
            return sample
        return await self._loaded(self._finish(sample, started, first, text))

    def _finish(self, sample: Sample, started: float, first: float | None, text: list[str]) -> Sample:
        end = time.perf_counter()
        sample.ttft_ms = (first - started) * 1000 if first is not None else None
        sample.total_ms = (end - started) * 1000
        sample.text = "".join(text)
        if sample.tokens_per_s is None:
            sample.tokens_per_s = _rate(sample.completion_tokens, None, first, end)
        return sample

    async def _loaded(self, sample: Sample) -> Sample:
        """The context the server loaded for this request (read through the plain arm's backend)."""
        sample.num_ctx, sample.kv_type = await self._peer.loaded()
        return sample

    async def close(self) -> None:
        await self.client.aclose()


@dataclass
class ArmSet:
    arms: list[Arm]
    model: str
    backend: str
    info: ModelInfo | None
    #: arms share one model server (then every block is preceded by a warm-up of that arm)
    shared_server: bool
    notes: list[str] = field(default_factory=list)
    #: the run's own folder (recall's empty memory store): removed by close()
    scratch: Path | None = None

    async def close(self) -> None:
        for arm in self.arms:
            await arm.close()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


def backend_plugins(host: PluginHost) -> list[str]:
    """Plugins that register a backend (the plain arm keeps these and the essential core only)."""
    return sorted(r.name for r in host.records.values() if any(x.startswith("backend:") for x in r.registered))


def plain_env(host: PluginHost) -> dict[str, str]:
    env = dict(host.env)
    env.pop("AUTOTUNE_DISABLE_PLUGINS", None)
    env["AUTOTUNE_LOAD_PLUGINS"] = ",".join(backend_plugins(host))
    return env


async def build_arms(model: str | None, backend: str | None, env: dict[str, str], *, direct: bool = True) -> ArmSet:
    """The default-stack arm, the plain arm and (for server backends) the direct arm, resolved to one model."""
    from ..chat.engine import pick_default

    merged = {**env, **({"AUTOTUNE_BACKEND": backend} if backend else {})}
    settings = load_settings(env=merged)
    # recall would search the user's own memories and add them to the autotune arm's prompts: a proof of
    # tuning must send both arms the same prompts, and must not read (or write) anyone's conversations
    scratch = Path(tempfile.mkdtemp(prefix="autotune-proof-"))
    memory = scratch / "memory.db"
    settings.plugins.settings.setdefault("recall", {})["path"] = str(memory)
    tuned_host = PluginHost(config=settings, env=merged)
    chosen = model or await pick_default(Pipeline(tuned_host))
    tuned = PipelineArm("autotune", "autotune (default stack)", tuned_host, chosen)
    plain_host = PluginHost(config=settings.model_copy(deep=True), env=plain_env(tuned_host))
    plain = PipelineArm("plain", "autotune, optimizations off", plain_host, chosen)
    await tuned.resolve()
    await plain.resolve()
    arms: list[Arm] = [tuned, plain]
    url = getattr(tuned.backend, "url", None)
    shared = isinstance(url, str) and bool(url)
    notes = [
        f"plain arm plugins: core + {', '.join(backend_plugins(tuned_host))}",
        "recall uses an empty memory store for the run (your memories are neither read nor added)",
    ]
    if direct and shared and tuned.backend_name in ("ollama", "openai"):
        arms.append(DirectArm(tuned.backend_name, str(url), tuned.model, loaded_from=plain))
    elif not shared:
        notes.append(f"no direct arm: {tuned.backend_name} runs inside autotune (there is no server to call)")
    return ArmSet(
        arms=arms,
        model=tuned.model,
        backend=tuned.backend_name,
        info=tuned.info,
        shared_server=shared,
        notes=notes,
        scratch=scratch,
    )
