"""The fake Ollama's scheduler: option checking, one runner per model (re)loaded when a runner option
changes, keep-alive expiry, LRU eviction, the per-runner prefix cache, and the generation core shared by
``/api/*`` and ``/v1/*``."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from .models import FakeModel
from .ollama_types import LoadEvent, OllamaError, Runner, parse_keep_alive
from .tokens import Output, common_prefix_len, pieces, token_id
from .wire import Request

__all__ = ["RUNNER_KEYS", "OllamaScheduler"]

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


@dataclass
class _Prompt:
    total: int  # tokens in the (possibly truncated) prompt
    cached: int
    new: int
    truncated: bool
    tokens: list[str]


class OllamaScheduler:
    """Mixin of :class:`fakes.fake_ollama.FakeOllama`: model lookup, options, runners and generation."""

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
            raise OllamaError(400, "json: cannot unmarshal options into Go struct field of type map[string]any")
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
            raise OllamaError(400, f"registry.ollama.ai/library/{self._canonical(model.name)} does not support tools")
