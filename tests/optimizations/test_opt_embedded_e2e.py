"""End to end on the embedded Gemma 3 270M through the pipeline, with every optimization on (max_tokens ≤ 16)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from autotune_core.config import Settings
from autotune_core.host import PluginHost
from autotune_core.messages import ChatRequest, Message
from autotune_core.pipeline import Pipeline
from autotune_core.testing import make_hardware

pytestmark = pytest.mark.embedded

MINE = (
    "ctx-sizing",
    "ctx-buckets",
    "kv-precision",
    "live-pressure",
    "noswap-guard",
    "model-fit",
    "prefix-protect",
    "keep-alive",
    "flash-attention",
    "prefill-batch",
)


def _host() -> PluginHost:
    """Every entry point and the real embedded llamacpp backend: the fixture's fake backend cannot answer this."""
    pytest.importorskip("llama_cpp")
    pytest.importorskip("autotune_plugins.backends.llamacpp")
    host = PluginHost(config=Settings(backend="llamacpp"), env={}, hardware=make_hardware(16, 12))
    if "llamacpp" not in host.backend_classes:
        pytest.skip("llamacpp backend not registered")
    return host


def test_embedded_conversation_tuned_without_reloads() -> None:
    host = _host()
    assert all(host.enabled(name) for name in MINE)

    async def go() -> tuple[list[Any], Any]:
        pipeline = Pipeline(host)
        messages = [Message(role="system", content="You are a helpful assistant. Answer briefly.")]
        plans = []
        try:
            for question in ("What is the capital of France?", "And of Italy?", "And of Spain?"):
                messages.append(Message(role="user", content=question))
                request = ChatRequest(model="gemma3:270m", messages=list(messages), max_tokens=12, temperature=0.0)
                prepared = await pipeline.prepare(request)
                result = await pipeline.run(prepared)
                assert result.content.strip()
                messages.append(Message(role="assistant", content=result.content))
                plans.append(prepared.plan)
            backend = prepared.backend
            return plans, backend
        finally:
            await host.stop()

    plans, backend = asyncio.run(go())
    first = plans[0]
    assert first.prompt_tokens_exact  # counted by the model's own tokenizer
    assert first.num_ctx is not None and first.num_ctx <= 1536  # not the backend's 4096 default
    assert first.applied["num_ctx"] == "at_load" and first.flash_attn is None  # CPU-only: FA left to the engine
    assert first.keep_alive == -1 and first.steps("kv_bytes")
    assert len({p.num_ctx for p in plans}) == 1 and len({p.num_batch for p in plans}) == 1
    assert backend.engine.reloads == 0 and backend.engine.loads == 1
    assert host.plugin("ctx-buckets").resizes == 0
    assert host.plugin("prefix-protect").truncations == 0
