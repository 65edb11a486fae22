"""A fake Ollama server that behaves like Ollama v0.30+ (or an older version via ``version=``).

What it models (see /work/shared/research/backend-knobs.md section 1):

* ``/api/chat`` and ``/api/generate``: NDJSON streaming by default, one JSON object with ``stream:false``;
  the final object has ``done``, ``done_reason`` and nanosecond timings.
* ``options``: unknown keys are ignored (recorded in ``.ignored_options``); a known key with the wrong JSON
  type
  is an HTTP 500 ``option "x" must be of type integer``.
* The scheduler: one runner per model, reloaded when a runner option (``num_ctx``, ``num_batch``, ``num_gpu``
  unless -1/omitted, ``main_gpu``, ``use_mmap``, ``num_thread``; from v0.30 also top-level ``shift``) differs
  from the loaded runner. Omitting ``num_ctx`` means the default context (``default_num_ctx``, 4096), so it
  reloads a runner loaded with another explicit ``num_ctx``. ``num_ctx`` is clamped to the trained context.
  Predict options and ``keep_alive`` never reload. ``.loads`` counts first loads, ``.reloads`` reloads.
* ``keep_alive``: number of seconds, or a Go duration string; negative = forever; 0 = unload after the
  request;
  a unit-less string is a 400. A request without messages/prompt loads the model (``done_reason: "load"``);
  with ``keep_alive: 0`` it unloads it (``done_reason: "unload"``).
* Prefix cache per runner: ``prompt_eval_count`` is the full prompt (except on exactly v0.30.0, where it is
  the
  uncached part only), ``prompt_eval_duration`` covers only the uncached tokens.
* ``/api/show``, ``/api/tags``, ``/api/ps``, ``/api/version``, ``/api/embed``, ``/api/embeddings``.
* ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``, ``/v1/models``: the OpenAI-compatible
  layer,
  which drops ``options``/``keep_alive``/any unknown field (recorded in ``.dropped_on_v1``) and so runs at the
  default context -- reloading a runner that was loaded with an explicit ``num_ctx``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .fake_openai import (
    OpenAIResult,
    chat_completion_body,
    chat_completion_events,
    completion_body,
    completion_events,
    embeddings_body,
)
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

__all__ = ["FakeOllama", "LoadEvent", "parse_go_duration", "run_fake_ollama"]

RUNNER_KEYS = ("num_ctx", "num_batch", "num_gpu", "main_gpu", "use_mmap", "num_thread")

_INT, _FLOAT, _BOOL, _ARRAY = "integer", "float32", "boolean", "array"
_OPTION_TYPES: dict[str, str] = {
    "num_ctx": _INT,
    "num_batch": _INT,
    "num_gpu": _INT,
    "main_gpu": _INT,
    "use_mmap": _BOOL,
    "num_thread": _INT,
    "num_keep": _INT,
    "seed": _INT,
    "num_predict": _INT,
    "top_k": _INT,
    "top_p": _FLOAT,
    "min_p": _FLOAT,
    "typical_p": _FLOAT,
    "repeat_last_n": _INT,
    "temperature": _FLOAT,
    "repeat_penalty": _FLOAT,
    "presence_penalty": _FLOAT,
    "frequency_penalty": _FLOAT,
    "stop": _ARRAY,
}
_V030_OPTION_TYPES = {"draft_num_predict": _INT}

# Fields of openai.ChatCompletionRequest in Ollama; everything else is dropped by Go's JSON decoder.
V1_CHAT_FIELDS = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "max_tokens",
        "seed",
        "stop",
        "temperature",
        "frequency_penalty",
        "presence_penalty",
        "top_p",
        "response_format",
        "tools",
        "reasoning",
        "reasoning_effort",
        "logprobs",
        "top_logprobs",
    }
)
V1_COMPLETION_FIELDS = frozenset(
    {
        "model",
        "prompt",
        "stream",
        "stream_options",
        "max_tokens",
        "seed",
        "stop",
        "temperature",
        "frequency_penalty",
        "presence_penalty",
        "top_p",
        "suffix",
        "logprobs",
    }
)
V1_EMBED_FIELDS = frozenset({"model", "input", "encoding_format", "dimensions"})

_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
FOREVER = math.inf


def parse_go_duration(text: str) -> float:
    """Go's ``time.ParseDuration`` in seconds; raises ``ValueError`` with Go's message."""
    orig = text
    if text in ("0", "+0", "-0"):
        return 0.0
    sign = 1.0
    if text[:1] in ("+", "-"):
        sign = -1.0 if text[0] == "-" else 1.0
        text = text[1:]
    if not text:
        raise ValueError(f'time: invalid duration "{orig}"')
    total, pos = 0.0, 0
    while pos < len(text):
        m = _DURATION_RE.match(text, pos)
        if m is None:
            if re.fullmatch(r"[0-9.]+", text[pos:]):
                raise ValueError(f'time: missing unit in duration "{orig}"')
            num = re.match(r"[0-9.]+", text[pos:])
            if num is not None:
                unit = re.match(r"[^0-9.]+", text[pos + num.end() :])
                raise ValueError(f'time: unknown unit "{unit.group(0) if unit else ""}" in duration "{orig}"')
            raise ValueError(f'time: invalid duration "{orig}"')
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def parse_keep_alive(value: Any) -> float:
    """``api.Duration.UnmarshalJSON``: seconds; ``math.inf`` for "forever"."""
    if isinstance(value, bool):
        raise ValueError("Unsupported type: 'bool'")
    if isinstance(value, int | float):
        return FOREVER if value < 0 else float(int(value))
    if isinstance(value, str):
        seconds = parse_go_duration(value)
        return FOREVER if seconds < 0 else seconds
    raise ValueError(f"Unsupported type: '{type(value).__name__}'")


def _version_tuple(version: str) -> tuple[int, int, int]:
    nums = [int(x) for x in re.findall(r"\d+", version)[:3]]
    while len(nums) < 3:
        nums.append(0)
    return (nums[0], nums[1], nums[2])


def _ts(t: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if t is None else t, tz=UTC).isoformat().replace("+00:00", "Z")


class OllamaError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class LoadEvent:
    """One load (``kind="load"``), reload (``"reload"``) or unload (``"unload"``) of a runner."""

    model: str
    kind: str
    options: dict[str, Any]
    previous: dict[str, Any] | None = None
    reason: str = ""


@dataclass
class Runner:
    model: FakeModel
    options: dict[str, Any]
    shift: bool
    keep_alive: float
    expires_at: float
    cache: list[str] = field(default_factory=list)
    loaded_at: float = field(default_factory=time.time)


@dataclass
class _Prompt:
    total: int  # tokens in the (possibly truncated) prompt
    cached: int
    new: int
    truncated: bool
    tokens: list[str]


class FakeOllama(FakeServer):
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

    # -- model lookup ---------------------------------------------------------------------------------------

    @staticmethod
    def _canonical(name: str) -> str:
        return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"

    def find_model(self, name: Any) -> FakeModel | None:
        if not isinstance(name, str) or not name:
            return None
        want = self._canonical(name)
        for m in self.models:
            if self._canonical(m.name) == want:
                return m
        return None

    def _require_model(self, body: dict[str, Any]) -> FakeModel:
        name = body.get("model") or body.get("name")
        if not name:
            raise OllamaError(400, "model is required")
        model = self.find_model(name)
        if model is None:
            raise OllamaError(404, f'model "{name}" not found, try pulling it first')
        return model

    # -- options and scheduling -----------------------------------------------------------------------------

    def _check_options(self, options: Any) -> dict[str, Any]:
        """``Options.FromMap``: unknown keys ignored (recorded), wrong types raise, ``null`` skipped."""
        if options is None:
            return {}
        if not isinstance(options, dict):
            raise OllamaError(
                400, "json: cannot unmarshal options into Go struct field of type map[string]any"
            )
        types = dict(_OPTION_TYPES)
        if self.is_v030:
            types.update(_V030_OPTION_TYPES)
        out: dict[str, Any] = {}
        for key, val in options.items():
            kind = types.get(key)
            if kind is None:
                self.ignored_options.append(key)
                continue
            if val is None:
                continue
            if kind in (_INT, _FLOAT):
                if isinstance(val, bool) or not isinstance(val, int | float):
                    raise OllamaError(500, f'option "{key}" must be of type {kind}')
                out[key] = int(val) if kind == _INT else float(val)
            elif kind == _BOOL:
                if not isinstance(val, bool):
                    raise OllamaError(500, f'option "{key}" must be of type boolean')
                out[key] = val
            else:
                if not isinstance(val, list):
                    raise OllamaError(500, f'option "{key}" must be of type array')
                if not all(isinstance(x, str) for x in val):
                    raise OllamaError(500, f'option "{key}" must be of an array of strings')
                out[key] = list(val)
        return out

    def _runner_options(self, model: FakeModel, opts: dict[str, Any]) -> dict[str, Any]:
        merged = {k: v for k, v in model.parameters.items() if k in RUNNER_KEYS}
        merged.update({k: v for k, v in opts.items() if k in RUNNER_KEYS})
        num_ctx = int(merged.get("num_ctx") or self.default_num_ctx)
        num_ctx = max(4, min(num_ctx, model.context_length))
        num_gpu = int(merged.get("num_gpu", -1))
        return {
            "num_ctx": num_ctx,
            "num_batch": int(merged.get("num_batch", 512)),
            "num_gpu": -1 if num_gpu < 0 else num_gpu,
            "main_gpu": merged.get("main_gpu"),
            "use_mmap": merged.get("use_mmap"),
            "num_thread": int(merged.get("num_thread", 0)),
        }

    def _expire(self) -> None:
        now = time.time()
        for name in [n for n, r in self.runners.items() if r.expires_at <= now]:
            self._unload(name, "expired")

    def _unload(self, name: str, reason: str) -> None:
        runner = self.runners.pop(name, None)
        if runner is not None:
            self.unloads += 1
            self.load_events.append(LoadEvent(name, "unload", dict(runner.options), reason=reason))

    def _schedule(
        self, model: FakeModel, opts: dict[str, Any], keep_alive: float | None, shift: bool
    ) -> tuple[Runner, bool]:
        """Find or (re)load the runner; returns ``(runner, loaded_now)``."""
        self._expire()
        name = self._canonical(model.name)
        new_opts = self._runner_options(model, opts)
        runner = self.runners.get(name)
        loaded_now = False
        if runner is None:
            while len(self.runners) >= max(1, self.max_loaded_models):
                oldest = min(self.runners.values(), key=lambda r: r.loaded_at)
                self._unload(self._canonical(oldest.model.name), "evicted")
            self.loads += 1
            self.load_events.append(LoadEvent(name, "load", dict(new_opts)))
            loaded_now = True
        else:
            changed = [k for k in RUNNER_KEYS if runner.options.get(k) != new_opts.get(k)]
            if self.is_v030 and runner.shift != shift:
                changed.append("shift")
            if changed:
                self.reloads += 1
                self.load_events.append(
                    LoadEvent(name, "reload", dict(new_opts), dict(runner.options), ",".join(changed))
                )
                loaded_now = True
        duration = self.default_keep_alive if keep_alive is None else keep_alive
        expires = time.time() + min(duration, 1e10)
        if loaded_now:
            runner = Runner(model, new_opts, shift, duration, expires)
            self.runners[name] = runner
        assert runner is not None
        runner.keep_alive = duration
        runner.expires_at = expires
        runner.loaded_at = time.time()
        return runner, loaded_now

    async def _load_wait(self, loaded_now: bool) -> int:
        if loaded_now and self.load_delay > 0:
            await asyncio.sleep(float(self.load_delay))
        return int(self.load_duration_ns if loaded_now else self.warm_load_duration_ns)

    def _prompt(self, runner: Runner, text: str, num_keep: int) -> _Prompt:
        toks = pieces(text)
        ctx = int(runner.options["num_ctx"])
        truncated = False
        if len(toks) >= ctx:  # keep num_keep tokens, drop the oldest of the rest
            keep = max(0, min(num_keep, ctx // 2))
            toks = toks[:keep] + toks[len(toks) - (ctx - keep - 1) :]
            truncated = True
            self.truncations += 1
        cached = common_prefix_len(runner.cache, toks)
        if cached >= len(toks) and cached > 0:
            cached = len(toks) - 1  # the last prompt token is always evaluated again
        return _Prompt(len(toks), cached, len(toks) - cached, truncated, toks)

    # -- request parsing ------------------------------------------------------------------------------------

    @staticmethod
    def _body(req: Request) -> dict[str, Any]:
        try:
            body = req.json()
        except Exception as exc:
            raise OllamaError(400, str(exc)) from exc
        if body is None:
            raise OllamaError(400, "missing request body")
        if not isinstance(body, dict):
            raise OllamaError(400, "json: cannot unmarshal into Go value of type api.ChatRequest")
        return body

    @staticmethod
    def _keep_alive(body: dict[str, Any]) -> float | None:
        if "keep_alive" not in body or body["keep_alive"] is None:
            return None
        try:
            return parse_keep_alive(body["keep_alive"])
        except ValueError as exc:
            raise OllamaError(400, str(exc)) from exc

    def _metrics(self, load_ns: int, prompt: _Prompt, eval_count: int) -> dict[str, int]:
        prompt_ns = int(prompt.new * 1e9 / self.prompt_tps) + 20_000
        eval_ns = int(eval_count * 1e9 / self.eval_tps)
        count = prompt.new if self.version_tuple == (0, 30, 0) else prompt.total
        return {
            "total_duration": load_ns + prompt_ns + eval_ns + 100_000,
            "load_duration": load_ns,
            "prompt_eval_count": count,
            "prompt_eval_duration": prompt_ns,
            "eval_count": eval_count,
            "eval_duration": eval_ns,
        }

    @staticmethod
    def _ollama_tool_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {
                "id": f"call_{token_id(c['name'] + str(i)):08x}",
                "function": {"index": i, "name": c["name"], "arguments": c["arguments"]},
            }
            for i, c in enumerate(calls)
        ]

    # -- shared generation core -----------------------------------------------------------------------------

    async def _run(
        self,
        body: dict[str, Any],
        model: FakeModel,
        prompt_text: str,
        opts: dict[str, Any],
        keep_alive: float | None,
        *,
        tools_offered: bool,
        json_mode: bool,
    ) -> tuple[Runner, int, _Prompt, Output]:
        shift = body.get("shift")
        runner, loaded_now = self._schedule(model, opts, keep_alive, True if shift is None else bool(shift))
        load_ns = await self._load_wait(loaded_now)
        num_keep = int(opts.get("num_keep", 4))
        prompt = self._prompt(runner, prompt_text, num_keep)
        if prompt.truncated and body.get("truncate") is False:
            raise OllamaError(400, "the input length exceeds the context length")
        room = int(runner.options["num_ctx"]) - prompt.total
        out = self.plan_output(
            body,
            max_tokens=opts.get("num_predict"),
            stop=opts.get("stop"),
            json_mode=json_mode,
            tools_offered=tools_offered,
            room=room,
        )
        runner.cache = pieces("".join(prompt.tokens) + out.text)
        return runner, load_ns, prompt, out

    def _finish(self, name: str, keep_alive: float | None) -> None:
        if keep_alive == 0:
            self._unload(name, "keep_alive=0")

    def _capability_check(self, model: FakeModel, what: str, tools: Any) -> None:
        if "completion" not in model.capabilities:
            raise OllamaError(400, f'"{model.name}" does not support {what}')
        if tools and "tools" not in model.capabilities:
            raise OllamaError(
                400, f"registry.ollama.ai/library/{self._canonical(model.name)} does not support tools"
            )

    # -- /api/chat and /api/generate ------------------------------------------------------------------------

    async def _api_chat(self, req: Request) -> Response | StreamResponse:
        try:
            return await self._chat_or_generate(req, chat=True)
        except OllamaError as exc:
            return json_response({"error": exc.message}, status=exc.status)

    async def _api_generate(self, req: Request) -> Response | StreamResponse:
        try:
            return await self._chat_or_generate(req, chat=False)
        except OllamaError as exc:
            return json_response({"error": exc.message}, status=exc.status)

    async def _chat_or_generate(self, req: Request, *, chat: bool) -> Response | StreamResponse:
        body = self._body(req)
        model = self._require_model(body)
        keep_alive = self._keep_alive(body)
        opts = self._check_options(body.get("options"))
        name_out = body.get("model") or body.get("name")
        tools = body.get("tools") if chat else None
        content_key = "message" if chat else "response"

        empty = not body.get("messages") if chat else not body.get("prompt")
        if empty:  # preload / unload
            if keep_alive == 0:
                self._unload(self._canonical(model.name), "keep_alive=0")
                reason = "unload"
            else:
                shift = body.get("shift")
                _, loaded_now = self._schedule(
                    model, opts, keep_alive, True if shift is None else bool(shift)
                )
                await self._load_wait(loaded_now)
                reason = "load"
            obj: dict[str, Any] = {"model": name_out, "created_at": _ts()}
            obj[content_key] = {"role": "assistant", "content": ""} if chat else ""
            obj.update({"done_reason": reason, "done": True})
            return json_response(obj)

        self._capability_check(model, "chat" if chat else "generate", tools)
        think = body.get("think")
        thinking_on = think is not None and think is not False
        if thinking_on and "thinking" not in model.capabilities:
            raise OllamaError(400, f'"{name_out}" does not support thinking')
        thinking = pieces(self.thinking_text) if thinking_on and self.thinking_text else []
        if chat:
            prompt_text = render_messages(body.get("messages"), tools)
        elif body.get("raw"):
            prompt_text = str(body.get("prompt", ""))
        else:
            system = body.get("system")
            prompt_text = (f"<|system|>\n{system}<|end|>\n" if system else "") + render_messages(
                [{"role": "user", "content": body.get("prompt", "")}]
            )
        json_mode = bool(body.get("format"))
        runner, load_ns, prompt, out = await self._run(
            body, model, prompt_text, opts, keep_alive, tools_offered=bool(tools), json_mode=json_mode
        )
        canonical = self._canonical(model.name)
        done_reason = "length" if out.finish_reason == "length" else "stop"
        metrics = self._metrics(load_ns, prompt, len(out.pieces) + len(thinking))
        tool_calls = self._ollama_tool_calls(out.tool_calls) if out.tool_calls else None
        final: dict[str, Any] = {"model": name_out, "created_at": ""}
        if chat:
            final["message"] = {"role": "assistant", "content": ""}
        else:
            final["response"] = ""
        final.update({"done": True, "done_reason": done_reason})
        if not chat and not body.get("raw"):
            final["context"] = [token_id(p) for p in runner.cache]
        final.update(metrics)

        if body.get("stream") is False:
            final["created_at"] = _ts()
            if chat:
                msg: dict[str, Any] = {"role": "assistant", "content": out.text}
                if thinking:
                    msg["thinking"] = "".join(thinking)
                if tool_calls:
                    msg["tool_calls"] = tool_calls
                final["message"] = msg
            else:
                final["response"] = out.text
                if thinking:
                    final["thinking"] = "".join(thinking)
            self._finish(canonical, keep_alive)
            return json_response(final)

        payloads: list[bytes] = []
        for text in self.chunk_texts(thinking):
            think_part: dict[str, Any] = {"model": name_out, "created_at": _ts()}
            if chat:
                think_part["message"] = {"role": "assistant", "content": "", "thinking": text}
            else:
                think_part.update({"response": "", "thinking": text})
            think_part["done"] = False
            payloads.append(dumps(think_part) + b"\n")
        for text in self.chunk_texts(out.pieces):
            part: dict[str, Any] = {"model": name_out, "created_at": _ts()}
            part[content_key] = {"role": "assistant", "content": text} if chat else text
            part["done"] = False
            payloads.append(dumps(part) + b"\n")
        if tool_calls:
            payloads.append(
                dumps(
                    {
                        "model": name_out,
                        "created_at": _ts(),
                        "message": {"role": "assistant", "content": "", "tool_calls": tool_calls},
                        "done": False,
                    }
                )
                + b"\n"
            )
        final["created_at"] = _ts()
        payloads.append(dumps(final) + b"\n")
        stream = StreamResponse(
            self.timed_events(payloads),
            content_type="application/x-ndjson",
            on_done=lambda: self._finish(canonical, keep_alive),
        )
        return self.apply_stream_failures(stream)

    # -- embeddings -----------------------------------------------------------------------------------------

    def _vector(self, text: str, dims: Any) -> list[float]:
        n = self.embedding_dims
        if isinstance(dims, int) and 0 < dims < n:
            vec = embed_text(text, n)[:dims]
            norm = sum(v * v for v in vec) ** 0.5 or 1.0
            return [v / norm for v in vec]
        return embed_text(text, n)

    async def _api_embed(self, req: Request) -> Response:
        try:
            body = self._body(req)
            model = self._require_model(body)
            keep_alive = self._keep_alive(body)
            opts = self._check_options(body.get("options"))
            raw_input = body.get("input")
            if raw_input is not None and not isinstance(raw_input, str | list):
                raise OllamaError(400, "invalid input type")
            inputs = [raw_input] if isinstance(raw_input, str) else list(raw_input or [])
            if not all(isinstance(x, str) for x in inputs):
                raise OllamaError(400, "invalid input type")
            runner, loaded_now = self._schedule(model, opts, keep_alive, True)
            load_ns = await self._load_wait(loaded_now)
            ctx = int(runner.options["num_ctx"])
            total = 0
            for text in inputs:
                n = len(pieces(text))
                if n > ctx and body.get("truncate") is False:
                    raise OllamaError(400, "the input length exceeds the context length")
                total += min(n, ctx)
            embeddings = [self._vector(t, body.get("dimensions")) for t in inputs]
            self._finish(self._canonical(model.name), keep_alive)
            prompt_ns = int(total * 1e9 / self.prompt_tps)
            return json_response(
                {
                    "model": body.get("model"),
                    "embeddings": embeddings,
                    "total_duration": load_ns + prompt_ns + 50_000,
                    "load_duration": load_ns,
                    "prompt_eval_count": total,
                }
            )
        except OllamaError as exc:
            return json_response({"error": exc.message}, status=exc.status)

    async def _api_embeddings(self, req: Request) -> Response:
        try:
            body = self._body(req)
            model = self._require_model(body)
            keep_alive = self._keep_alive(body)
            opts = self._check_options(body.get("options"))
            _, loaded_now = self._schedule(model, opts, keep_alive, True)
            await self._load_wait(loaded_now)
            prompt = body.get("prompt") or ""
            self._finish(self._canonical(model.name), keep_alive)
            return json_response({"embedding": self._vector(str(prompt), None) if prompt else []})
        except OllamaError as exc:
            return json_response({"error": exc.message}, status=exc.status)

    # -- introspection --------------------------------------------------------------------------------------

    def _details(self, model: FakeModel, *, with_lengths: bool = False) -> dict[str, Any]:
        family = model.family or model.architecture
        details: dict[str, Any] = {
            "parent_model": "",
            "format": "gguf",
            "family": family,
            "families": [family],
            "parameter_size": model.parameter_size,
            "quantization_level": model.quantization_level,
        }
        if with_lengths and self.is_v030:
            details["context_length"] = model.context_length
            details["embedding_length"] = model.embedding_length
        return details

    async def _root(self, req: Request) -> Response:
        return Response(body=b"Ollama is running", content_type="text/plain; charset=utf-8")

    async def _api_version(self, req: Request) -> Response:
        return json_response({"version": self.version})

    async def _api_show(self, req: Request) -> Response:
        try:
            body = self._body(req)
        except OllamaError as exc:
            return json_response({"error": exc.message}, status=exc.status)
        name = body.get("model") or body.get("name") or ""
        model = self.find_model(name)
        if model is None:
            return json_response({"error": f"model '{name}' not found"}, status=404)
        params = model.parameters_text()
        modelfile = f'# Modelfile generated by "ollama show"\nFROM {self._canonical(model.name)}\n'
        modelfile += f'TEMPLATE """{model.template}"""\n'
        modelfile += "".join(f"PARAMETER {line}\n" for line in params.splitlines())
        return json_response(
            {
                "license": "",
                "modelfile": modelfile,
                "parameters": params,
                "template": model.template,
                "details": self._details(model),
                "model_info": model.model_info(),
                "capabilities": list(model.capabilities),
                "modified_at": _ts(1_750_000_000),
            }
        )

    async def _api_tags(self, req: Request) -> Response:
        return json_response(
            {
                "models": [
                    {
                        "name": self._canonical(m.name),
                        "model": self._canonical(m.name),
                        "modified_at": _ts(1_750_000_000),
                        "size": m.size,
                        "digest": m.digest,
                        "details": self._details(m, with_lengths=True),
                        "capabilities": list(m.capabilities),
                    }
                    for m in self.models
                ]
            }
        )

    def _kv_bytes_per_elem(self) -> float:
        return {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 1.0625, "q4_0": 0.5625}.get(
            self.kv_cache_type, 2.0
        )

    async def _api_ps(self, req: Request) -> Response:
        self._expire()
        out = []
        for name, r in self.runners.items():
            size = r.model.size + r.model.kv_bytes(int(r.options["num_ctx"]), self._kv_bytes_per_elem())
            vram = 0 if r.options["num_gpu"] == 0 else int(size * self.vram_fraction)
            expires = datetime.now().astimezone() + timedelta(
                seconds=min(r.expires_at - time.time(), 292 * 365 * 86400.0)
            )
            out.append(
                {
                    "name": name,
                    "model": name,
                    "size": size,
                    "digest": r.model.digest,
                    "details": self._details(r.model),
                    "expires_at": expires.isoformat(),
                    "size_vram": vram,
                    "context_length": int(r.options["num_ctx"]),
                }
            )
        return json_response({"models": out})

    # -- OpenAI-compatible layer ----------------------------------------------------------------------------

    def _v1_error(self, status: int, message: str) -> Response:
        kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
        return json_response(
            {"error": {"message": message, "type": kind, "param": None, "code": None}}, status
        )

    def _v1_options(self, body: dict[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
        for key in body:
            if key not in allowed:
                self.dropped_on_v1.append(key)
        opts: dict[str, Any] = {}
        for key in ("temperature", "top_p", "seed", "frequency_penalty", "presence_penalty"):
            if isinstance(body.get(key), int | float) and not isinstance(body.get(key), bool):
                opts[key] = body[key]
        stop = body.get("stop")
        if isinstance(stop, str):
            opts["stop"] = [stop]
        elif isinstance(stop, list):
            opts["stop"] = [s for s in stop if isinstance(s, str)]
        if isinstance(body.get("max_tokens"), int):
            opts["num_predict"] = body["max_tokens"]
        return opts

    async def _v1_generate(self, req: Request, *, chat: bool) -> Response | StreamResponse:
        try:
            body = self._body(req)
        except OllamaError as exc:
            return self._v1_error(exc.status, exc.message)
        opts = self._v1_options(body, V1_CHAT_FIELDS if chat else V1_COMPLETION_FIELDS)
        try:
            model = self._require_model(body)
            tools = body.get("tools") if chat else None
            self._capability_check(model, "chat" if chat else "generate", tools)
            if chat:
                if not isinstance(body.get("messages"), list) or not body["messages"]:
                    raise OllamaError(400, "[] is too short - 'messages'")
                prompt_text = render_messages(body["messages"], tools)
            else:
                prompt = body.get("prompt")
                prompt_text = prompt if isinstance(prompt, str) else "".join(map(str, prompt or []))
            rf = body.get("response_format")
            json_mode = isinstance(rf, dict) and rf.get("type") in ("json_object", "json_schema")
            kept = {k: v for k, v in body.items() if k in (V1_CHAT_FIELDS if chat else V1_COMPLETION_FIELDS)}
            _, _load_ns, prompt, out = await self._run(
                kept, model, prompt_text, opts, None, tools_offered=bool(tools), json_mode=json_mode
            )
        except OllamaError as exc:
            return self._v1_error(exc.status, exc.message)
        prompt_count = prompt.new if self.version_tuple == (0, 30, 0) else prompt.total
        result = OpenAIResult(
            model=str(body.get("model")),
            output=out,
            prompt_tokens=prompt_count,
            cached_tokens=None,
            system_fingerprint="fp_ollama",
        )
        streaming = bool(body.get("stream"))
        if not streaming:
            return json_response(chat_completion_body(result) if chat else completion_body(result))
        so = body.get("stream_options")
        include_usage = isinstance(so, dict) and bool(so.get("include_usage"))
        chunks = self.chunk_texts(out.pieces)
        payloads = (
            chat_completion_events(result, chunks, include_usage)
            if chat
            else completion_events(result, chunks, include_usage)
        )
        stream = StreamResponse(self.timed_events(payloads), content_type="text/event-stream")
        error_event = (
            b"data: "
            + dumps(
                {
                    "error": {
                        "message": "an error was encountered while running the model",
                        "type": "api_error",
                        "param": None,
                        "code": None,
                    }
                }
            )
            + b"\n\n"
        )
        return self.apply_stream_failures(stream, error_event)

    async def _v1_chat(self, req: Request) -> Response | StreamResponse:
        return await self._v1_generate(req, chat=True)

    async def _v1_completions(self, req: Request) -> Response | StreamResponse:
        return await self._v1_generate(req, chat=False)

    async def _v1_embeddings(self, req: Request) -> Response:
        try:
            body = self._body(req)
            self._v1_options(body, V1_EMBED_FIELDS)
            model = self._require_model(body)
            raw_input = body.get("input")
            if raw_input is not None and not isinstance(raw_input, str | list):
                raise OllamaError(400, "invalid input type")
            inputs = [raw_input] if isinstance(raw_input, str) else list(raw_input or [])
            if not inputs:
                raise OllamaError(400, "invalid input")
            _, loaded_now = self._schedule(model, {}, None, True)
            await self._load_wait(loaded_now)
        except OllamaError as exc:
            return self._v1_error(exc.status, exc.message)
        texts = [
            x if isinstance(x, str) else " ".join(map(str, x)) if isinstance(x, list) else str(x)
            for x in inputs
        ]
        vectors = [self._vector(t, body.get("dimensions")) for t in texts]
        n_tokens = sum(len(pieces(t)) for t in texts)
        return json_response(
            embeddings_body(str(body.get("model")), vectors, n_tokens, body.get("encoding_format"))
        )

    async def _v1_models(self, req: Request) -> Response:
        return json_response(
            {
                "object": "list",
                "data": [
                    {
                        "id": self._canonical(m.name),
                        "object": "model",
                        "created": 1_750_000_000,
                        "owned_by": "library",
                    }
                    for m in self.models
                ],
            }
        )


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
