"""Pulled GGUFs through the server: listed on /v1/models and /api/tags, and a real pulled model answers.

The Hub is the stand-in on 127.0.0.1 (tests/fakes/fake_hub.py); the real-model test serves the bundled
Gemma 3 270M GGUF's bytes through it, so the pulled file is a real model the embedded engine loads.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import LiveServer, serve, settings
from fakes.fake_hub import FakeHub

from autotune_core.hub import pull_gguf
from autotune_core.model_refs import parse_ref
from autotune_core.testing import make_hardware


def _live() -> LiveServer:
    """A live server on the real llamacpp backend only: pulled models are served by it, not by the fake."""
    try:
        from autotune_plugins.backends.llamacpp import LlamaCppPlugin
    except ImportError as exc:
        pytest.skip(f"the llamacpp backend plugin is not importable: {exc}")
    from autotune_core.host import PluginHost

    config = settings()
    config.backend_order = ["llamacpp"]
    host = PluginHost(config=config, plugins=[LlamaCppPlugin()], load_entrypoints=False, hardware=make_hardware())
    return serve(host)


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as fake:
        yield fake


def test_pulled_models_are_listed_by_both_doors(hub: FakeHub) -> None:
    hub.add_repo("owner/tiny-GGUF", {"tiny-Q4_K_M.gguf": os.urandom(4096)})
    pull_gguf(parse_ref("hf.co/owner/tiny-GGUF:Q4_K_M"), endpoint=hub.url, token=False)
    live = _live()
    try:
        with live.client() as client:
            openai_ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
            tags = {m["name"]: m for m in client.get("/api/tags").json()["models"]}
            assert "hf.co/owner/tiny-GGUF:Q4_K_M" in openai_ids
            tiny = tags["hf.co/owner/tiny-GGUF:Q4_K_M"]
            assert tiny["size"] == 4096 and tiny["details"]["quantization_level"] == "Q4_K_M"
            if "gemma3-270m" in tags:  # the bundled base model says so where Ollama clients look
                shown = client.post("/api/show", json={"model": "gemma3-270m"}).json()
                assert "# note: base model (not instruction-tuned)" in shown["modelfile"]
                assert "autotune pull gemma3-270m-it" in shown["modelfile"]
                other = client.post("/api/show", json={"model": "hf.co/owner/tiny-GGUF:Q4_K_M"})
                assert "note" not in other.text
    finally:
        live.stop(wait=False)


@pytest.mark.embedded
def test_a_pulled_real_gguf_answers_a_chat(hub: FakeHub) -> None:
    try:
        from autotune_plugins.backends.llamacpp import gemma_path

        bundled = Path(gemma_path())
    except ImportError:
        pytest.skip("the bundled Gemma 3 270M package is not installed")
    hub.add_repo("someone/gemma-3-270m-GGUF", {"gemma-3-270m-Q4_K_M.gguf": bundled.read_bytes()})
    manifest = pull_gguf(parse_ref("someone/gemma-3-270m-GGUF"), endpoint=hub.url, token=False)
    assert manifest.name == "hf.co/someone/gemma-3-270m-GGUF:Q4_K_M"
    live = _live()
    try:
        with live.client(timeout=120.0) as client:
            answer = client.post(
                "/v1/completions",
                json={
                    "model": "someone/gemma-3-270m-GGUF:Q4_K_M",
                    "prompt": "1, 2, 3, 4,",
                    "max_tokens": 4,
                    "temperature": 0,
                },
            )
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["model"] == "someone/gemma-3-270m-GGUF:Q4_K_M"
            assert body["choices"][0]["text"].strip() and body["usage"]["completion_tokens"] >= 1
            missing = client.post(
                "/v1/completions", json={"model": "hf.co/someone/never-pulled:Q8_0", "prompt": "x", "max_tokens": 1}
            )
            assert missing.status_code == 404 and missing.json()["error"]["type"] == "model_not_found"
    except httpx.HTTPError as exc:
        pytest.fail(f"the server did not answer: {exc}")
    finally:
        live.stop()
