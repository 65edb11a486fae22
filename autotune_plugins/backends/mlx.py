"""MLX-LM server backend (Apple Silicon): an OpenAI-compatible ``mlx_lm.server``, default http://127.0.0.1:8080.

Why a separate backend: the MLX server has no context-size or KV-quantization knob at all
(docs/backend-facts.md#mlx; every PR adding them was closed), and its ``--max-tokens`` default of 512
cuts answers short, so ``max_tokens`` is always sent. Off Apple Silicon, or without ``mlx_lm``, it registers
but reports itself unavailable with the reason; importing this module never needs MLX.
"""

from __future__ import annotations

import importlib.util
import platform
import sys
from typing import Any

from autotune_core.backend import Availability, Capabilities, KnobScope, KnobSupport
from autotune_core.markers import hookimpl
from autotune_core.messages import ChatRequest
from autotune_core.plan import Plan

from ._common import make_client, openai_body
from ._openai import OpenAIBackend

DEFAULT_URL = "http://127.0.0.1:8080"
#: what we send when neither the client nor the plan set max_tokens (the server would stop at 512)
DEFAULT_MAX_TOKENS = 2048


def platform_reason() -> str | None:
    """Why MLX cannot run here (None: it can)."""
    if sys.platform != "darwin" or platform.machine() != "arm64":
        return f"MLX needs Apple Silicon (this is {sys.platform}/{platform.machine()})"
    if importlib.util.find_spec("mlx_lm") is None:
        return "mlx_lm is not installed (pip install mlx-lm; then run `mlx_lm.server`)"
    return None


class MLXBackend(OpenAIBackend):
    """``mlx_lm.server``: only per-request sampling and max_tokens can be tuned."""

    name = "mlx"
    label = "MLX-LM server"
    default_url = DEFAULT_URL

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        merged = {"flavour": "generic", **(settings or {})}
        super().__init__(merged)
        self.flavour = "mlx"
        self._detected = True

    def capabilities(self) -> Capabilities:
        none = "mlx_lm.server has no such option"
        return Capabilities(
            dialect="openai:mlx",
            can_tokenize=False,
            can_embed=False,
            prefix_cache=True,
            knobs={
                "num_ctx": KnobSupport(scope=KnobScope.UNSUPPORTED, how=f"{none} (context is bounded by memory)"),
                "kv_type": KnobSupport(
                    scope=KnobScope.UNSUPPORTED, how=f"{none}; --kv-bits exists only in mlx_lm.generate"
                ),
                "flash_attn": KnobSupport(scope=KnobScope.UNSUPPORTED),
                "num_batch": KnobSupport(scope=KnobScope.SERVER_ENV, how="mlx_lm.server --prefill-step-size <n>"),
                "parallel": KnobSupport(scope=KnobScope.SERVER_ENV, how="mlx_lm.server --decode-concurrency <n>"),
                "keep_alive": KnobSupport(scope=KnobScope.UNSUPPORTED),
                "num_keep": KnobSupport(scope=KnobScope.UNSUPPORTED),
            },
        )

    async def available(self) -> Availability:
        reason = platform_reason()
        if reason is not None and not self.settings.get("url"):
            return Availability(ok=False, reason=reason)
        return await super().available()

    async def refresh(self) -> None:
        if self.url is None:
            self.url = self.candidates[0].rstrip("/")
        async with make_client(self.url, self.config.probe_timeout) as probe:
            if await probe.get_json("/v1/models") is None:
                from autotune_core.errors import BackendUnavailable

                raise BackendUnavailable(f"mlx_lm.server at {self.url} is not answering")
        self._detected = True

    async def _ensure(self) -> None:
        if self._client is None:
            await self.refresh()

    def build_body(self, request: ChatRequest, plan: Plan, *, stream: bool) -> dict[str, Any]:
        body = openai_body(request, plan, stream=stream)
        body.setdefault("max_tokens", DEFAULT_MAX_TOKENS)
        return body

    async def ensure_loaded(self, model: str, plan: Plan) -> float | None:
        return None


class MLXPlugin:
    """MLX-LM server on Apple Silicon (unavailable elsewhere, with the reason); max_tokens always sent."""

    @hookimpl
    def register_backends(self, register: Any) -> None:
        register(MLXBackend)
