"""Model metadata the fakes report, and the three default models (real GGUF values)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["GEMMA3_270M", "LLAMA_3_2_1B", "NOMIC_EMBED_TEXT", "FakeModel", "default_models"]


@dataclass
class FakeModel:
    """GGUF-style metadata of one model, as the fakes report it (``/api/show``, ``/v1/models``, ...)."""

    name: str
    architecture: str = "llama"
    block_count: int = 16
    head_count: int = 32
    head_count_kv: int | list[int] = 8
    embedding_length: int = 2048
    context_length: int = 131072
    key_length: int | None = None
    value_length: int | None = None
    sliding_window: int | None = None
    family: str | None = None
    parameter_size: str = "1.2B"
    parameter_count: int = 1_235_814_432
    quantization_level: str = "Q8_0"
    file_type: int = 7
    size: int = 1_321_098_329
    capabilities: list[str] = field(default_factory=lambda: ["completion", "tools"])
    # Modelfile PARAMETER defaults (Ollama); runner keys here (num_ctx, ...) act as model defaults.
    parameters: dict[str, Any] = field(default_factory=dict)
    template: str = "{{ .Prompt }}"
    extra_info: dict[str, Any] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.name.encode()).hexdigest()

    @property
    def is_embedding_only(self) -> bool:
        return "embedding" in self.capabilities and "completion" not in self.capabilities

    def renamed(self, name: str) -> FakeModel:
        return dataclasses.replace(self, name=name)

    def kv_heads_total(self) -> int:
        if isinstance(self.head_count_kv, list):
            return sum(self.head_count_kv)
        return self.head_count_kv * self.block_count

    def kv_bytes(self, n_ctx: int, bytes_per_elem: float = 2.0) -> int:
        """KV cache size: ctx x sum over layers of kv_heads x (key_length + value_length) x bytes/elem."""
        k = self.key_length or self.embedding_length // self.head_count
        v = self.value_length or self.embedding_length // self.head_count
        return int(n_ctx * self.kv_heads_total() * (k + v) * bytes_per_elem)

    def model_info(self) -> dict[str, Any]:
        a = self.architecture
        info: dict[str, Any] = {
            "general.architecture": a,
            "general.file_type": self.file_type,
            "general.parameter_count": self.parameter_count,
            "general.quantization_version": 2,
            f"{a}.block_count": self.block_count,
            f"{a}.context_length": self.context_length,
            f"{a}.embedding_length": self.embedding_length,
            f"{a}.attention.head_count": self.head_count,
            f"{a}.attention.head_count_kv": self.head_count_kv,
        }
        if self.key_length is not None:
            info[f"{a}.attention.key_length"] = self.key_length
        if self.value_length is not None:
            info[f"{a}.attention.value_length"] = self.value_length
        if self.sliding_window is not None:
            info[f"{a}.attention.sliding_window"] = self.sliding_window
        info.update(self.extra_info)
        return dict(sorted(info.items()))

    def parameters_text(self) -> str:
        """The ``parameters`` string of ``/api/show`` (Modelfile ``PARAMETER`` lines)."""
        lines: list[str] = []
        for key, value in self.parameters.items():
            values = value if isinstance(value, list) else [value]
            for v in values:
                shown = json.dumps(v) if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else v
                lines.append(f"{key:<31}{shown}")
        return "\n".join(lines)


# The three default models (Ollama names; the OpenAI-style fakes rename them).
LLAMA_3_2_1B = FakeModel(
    name="llama3.2:1b",
    architecture="llama",
    block_count=16,
    head_count=32,
    head_count_kv=8,
    embedding_length=2048,
    context_length=131072,
    parameter_size="1.2B",
    parameter_count=1_235_814_432,
    quantization_level="Q8_0",
    file_type=7,
    size=1_321_098_329,
    capabilities=["completion", "tools"],
    parameters={"stop": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]},
    extra_info={
        "llama.rope.freq_base": 500000,
        "llama.vocab_size": 128256,
        "llama.feed_forward_length": 8192,
    },
)
GEMMA3_270M = FakeModel(
    name="gemma3:270m",
    architecture="gemma3",
    block_count=18,
    head_count=4,
    head_count_kv=1,
    embedding_length=640,
    context_length=32768,
    key_length=256,
    value_length=256,
    sliding_window=512,
    parameter_size="268.10M",
    parameter_count=268_098_176,
    quantization_level="Q8_0",
    file_type=7,
    size=291_554_930,
    capabilities=["completion"],
    parameters={"stop": ["<end_of_turn>"], "temperature": 1, "top_k": 64, "top_p": 0.95},
    extra_info={"gemma3.feed_forward_length": 2048, "gemma3.rope.freq_base": 1000000},
)
NOMIC_EMBED_TEXT = FakeModel(
    name="nomic-embed-text:latest",
    architecture="nomic-bert",
    block_count=12,
    head_count=12,
    head_count_kv=12,
    embedding_length=768,
    context_length=2048,
    parameter_size="137M",
    parameter_count=136_727_040,
    quantization_level="F16",
    file_type=1,
    size=274_302_450,
    capabilities=["embedding"],
    parameters={"num_ctx": 8192},
    extra_info={"nomic-bert.pooling_type": 1},
)


def default_models() -> list[FakeModel]:
    """Fresh copies of the three default models."""
    return [dataclasses.replace(m) for m in (LLAMA_3_2_1B, GEMMA3_270M, NOMIC_EMBED_TEXT)]
