"""Faithful fake model servers for contract tests and proxy-overhead benchmarks.

    from fakes import run_fake_ollama, run_fake_openai

    with run_fake_ollama() as ollama:            # ollama.url -> "http://127.0.0.1:<port>"
        ...
    with run_fake_openai(flavour="llama-server", n_ctx=8192) as llama:
        ...

``fakes.fake_hub.FakeHub`` stands in for the Hugging Face Hub (and its CDN) for ``autotune pull``.
Pytest fixtures live in :mod:`fakes.fixtures`. Nothing here imports autotune code.
"""

from .fake_hub import FakeHub
from .fake_ollama import FakeOllama, LoadEvent, ndjson_lines, parse_go_duration, run_fake_ollama
from .fake_openai import FLAVOURS, FakeOpenAI, Instance, parse_sse, run_fake_openai
from .server import (
    GEMMA3_270M,
    LLAMA_3_2_1B,
    NOMIC_EMBED_TEXT,
    FakeModel,
    FakeServer,
    RecordedRequest,
    count_tokens,
    default_models,
    embed_text,
    pieces,
    render_messages,
)

__all__ = [
    "FLAVOURS",
    "GEMMA3_270M",
    "LLAMA_3_2_1B",
    "NOMIC_EMBED_TEXT",
    "FakeHub",
    "FakeModel",
    "FakeOllama",
    "FakeOpenAI",
    "FakeServer",
    "Instance",
    "LoadEvent",
    "RecordedRequest",
    "count_tokens",
    "default_models",
    "embed_text",
    "ndjson_lines",
    "parse_go_duration",
    "parse_sse",
    "pieces",
    "render_messages",
    "run_fake_ollama",
    "run_fake_openai",
]
