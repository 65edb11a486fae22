"""Test helpers shipped for plugin authors: an in-process fake backend and ready-made facts.

The fake behaves like an at-load backend (num_ctx and num_batch changes reload, the KV type is a
server setting) so plugins can be tested for reload behaviour without a network.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from .backend import Availability, Backend, Capabilities, EmbeddingResult, KnobScope, KnobSupport
from .hardware import CpuInfo, GiB, HardwareSnapshot
from .messages import ChatRequest, ChatResult, LoadedModel, ModelEntry, StreamChunk, Timings, Usage
from .modelinfo import ModelInfo
from .plan import Plan
from .tokens import estimate_message_tokens, estimate_tokens

#: a llama-3.2-1B-shaped model: 16 layers, 8 KV heads of 64 dims
LLAMA_1B = ModelInfo(
    name="llama3.2:1b",
    architecture="llama",
    block_count=16,
    head_count=32,
    head_count_kv=8,
    embedding_length=2048,
    key_length=64,
    value_length=64,
    context_length=131072,
    quantization="Q4_K_M",
    size_bytes=int(1.3 * GiB),
    parameter_count=1_240_000_000,
)
#: a gemma-3-270M-shaped model with sliding-window layers (5 local : 1 global)
GEMMA_270M = ModelInfo(
    name="gemma3:270m",
    architecture="gemma3",
    block_count=18,
    head_count=4,
    head_count_kv=1,
    embedding_length=640,
    key_length=256,
    value_length=256,
    context_length=32768,
    sliding_window=512,
    swa_layers=[(i + 1) % 6 != 0 for i in range(18)],
    quantization="Q4_K_M",
    size_bytes=253_000_000,
    parameter_count=268_000_000,
)


def make_hardware(ram_gib: float = 16, available_gib: float = 12, *, swap_used_gib: float = 0) -> HardwareSnapshot:
    """A CPU-only Linux machine with the given RAM."""
    return HardwareSnapshot(
        os="linux",
        cpu=CpuInfo(brand="Test CPU", arch="x86_64", cores_physical=4, cores_logical=8),
        ram_total_bytes=int(ram_gib * GiB),
        ram_available_bytes=int(available_gib * GiB),
        swap_total_bytes=int(4 * GiB),
        swap_used_bytes=int(swap_used_gib * GiB),
    )


def ollama_like_capabilities() -> Capabilities:
    return Capabilities(
        dialect="fake",
        can_tokenize=False,
        can_embed=True,
        knobs={
            "num_ctx": KnobSupport(scope=KnobScope.AT_LOAD, reloads=True),
            "num_batch": KnobSupport(scope=KnobScope.AT_LOAD, reloads=True),
            "kv_type": KnobSupport(scope=KnobScope.SERVER_ENV, how="FAKE_KV_CACHE_TYPE"),
            "flash_attn": KnobSupport(scope=KnobScope.SERVER_ENV, how="FAKE_FLASH_ATTENTION"),
            "keep_alive": KnobSupport(scope=KnobScope.PER_REQUEST),
            "num_keep": KnobSupport(scope=KnobScope.PER_REQUEST),
            "parallel": KnobSupport(scope=KnobScope.SERVER_ENV, how="FAKE_NUM_PARALLEL"),
        },
    )


class FakeBackend(Backend):
    """An in-process backend: answers with ``reply`` word by word and counts loads and reloads."""

    name = "fake"
    label = "in-process fake"

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        super().__init__(settings)
        self.models: dict[str, ModelInfo] = {m.name: m for m in (LLAMA_1B, GEMMA_270M)}
        self.reply: str = str(self.settings.get("reply", "Hello from the fake backend."))
        self.chunk_delay: float = float(self.settings.get("chunk_delay", 0.0))
        self.fail_after_chunks: int | None = self.settings.get("fail_after_chunks")
        self.caps = ollama_like_capabilities()
        self.plans: list[Plan] = []
        self.loaded: dict[str, tuple[int | None, int | None]] = {}
        self.loads = 0
        self.cancelled = 0
        self.up = True

    def capabilities(self) -> Capabilities:
        return self.caps

    async def available(self) -> Availability:
        return Availability(ok=self.up, reason="" if self.up else "fake backend is down", version="fake-1")

    async def list_models(self) -> list[ModelEntry]:
        return [
            ModelEntry(name=name, backend=self.name, size_bytes=info.size_bytes, context_length=info.context_length)
            for name, info in self.models.items()
        ]

    async def model_info(self, model: str) -> ModelInfo:
        return self.models[model]

    def _load(self, plan: Plan) -> bool:
        """Track the runner; returns True when this request (re)loaded the model."""
        runner = (plan.num_ctx, plan.num_batch)
        previous = self.loaded.get(plan.model)
        if previous == runner:
            return False
        if previous is not None:
            self.reloads += 1
        self.loads += 1
        self.loaded[plan.model] = runner
        return True

    def _result(self, request: ChatRequest, plan: Plan, reloaded: bool) -> ChatResult:
        prompt = estimate_message_tokens(plan.messages)
        if plan.num_ctx is not None:
            prompt = min(prompt, plan.num_ctx)
        return ChatResult(
            model=request.model,
            backend=self.name,
            content=self.reply,
            usage=Usage(prompt_tokens=prompt, completion_tokens=estimate_tokens(self.reply)),
            timings=Timings(load_ms=50.0 if reloaded else 0.0, prompt_ms=1.0, decode_ms=2.0, reloaded=reloaded),
        )

    async def chat(self, request: ChatRequest, plan: Plan) -> ChatResult:
        self.plans.append(plan)
        return self._result(request, plan, self._load(plan))

    async def stream_chat(self, request: ChatRequest, plan: Plan) -> AsyncIterator[StreamChunk]:
        self.plans.append(plan)
        reloaded = self._load(plan)
        words = self.reply.split(" ")
        try:
            for index, word in enumerate(words):
                if self.fail_after_chunks is not None and index >= self.fail_after_chunks:
                    raise ConnectionError("fake upstream dropped the stream")
                if self.chunk_delay:
                    await asyncio.sleep(self.chunk_delay)
                yield StreamChunk(content=word if index == 0 else " " + word)
            final = self._result(request, plan, reloaded)
            yield StreamChunk(done=True, finish_reason="stop", usage=final.usage, timings=final.timings)
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled += 1
            raise

    async def embed(self, model: str, inputs: list[str]) -> EmbeddingResult:
        vectors = []
        for text in inputs:
            vector = [0.0] * 32
            for word in text.lower().split():
                vector[hash(word) % 32] += 1.0
            norm = sum(v * v for v in vector) ** 0.5 or 1.0
            vectors.append([v / norm for v in vector])
        return EmbeddingResult(vectors=vectors, model=model)

    async def loaded_models(self) -> list[LoadedModel]:
        return [
            LoadedModel(name=name, backend=self.name, context_length=runner[0]) for name, runner in self.loaded.items()
        ]

    async def unload(self, model: str) -> bool:
        return self.loaded.pop(model, None) is not None


class FakeBackendPlugin:
    """Registers :class:`FakeBackend` (use with ``PluginHost(plugins=[FakeBackendPlugin()])``)."""

    name = "fake-backend"

    from .markers import hookimpl as _hookimpl

    @_hookimpl
    def register_backends(self, register: Any) -> None:
        register(FakeBackend)
