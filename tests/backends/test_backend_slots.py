"""Backends say how many requests their server runs at once (``parallel_slots``), where the server tells."""

from __future__ import annotations

from typing import Any

import pytest
from fakes.wire import Request, Response, json_response

from autotune_plugins.backends._openai import OpenAIBackend, _max_num_seqs
from autotune_plugins.backends.llamacpp import LlamaCppBackend
from autotune_plugins.backends.ollama import OllamaBackend


@pytest.mark.parametrize("slots", [1, 3])
async def test_llama_server_slots_come_from_props(fake_openai_factory: Any, slots: int) -> None:
    fake = fake_openai_factory("llama-server", n_slots=slots)
    backend = OpenAIBackend({"url": fake.url})
    assert backend.parallel_slots() is None  # nothing known before the server was asked
    await backend.refresh()
    assert backend.flavour == "llama-server" and backend.parallel_slots() == slots
    await backend.aclose()


async def test_vllm_slots_come_from_server_info_when_it_is_served(fake_openai_factory: Any) -> None:
    fake = fake_openai_factory("vllm")
    backend = OpenAIBackend({"url": fake.url})
    await backend.refresh()
    assert backend.flavour == "vllm" and backend.parallel_slots() is None  # /server_info off by default

    async def server_info(req: Request) -> Response:
        return json_response({"vllm_config": {"scheduler_config": {"max_num_seqs": 48}}})

    fake.route("GET", "/server_info", server_info)
    await backend.refresh()
    assert backend.parallel_slots() == 48
    await backend.aclose()


def test_max_num_seqs_is_read_from_either_shape_of_server_info() -> None:
    assert _max_num_seqs({"vllm_config": "model='m', max_num_seqs=256, max_model_len=4096"}) == 256
    assert _max_num_seqs({"a": {"b": {"max_num_seqs": 8}}}) == 8
    assert _max_num_seqs({"max_num_seqs": 0}) is None and _max_num_seqs({"max_num_seqs": True}) is None
    assert _max_num_seqs(None) is None and _max_num_seqs({"vllm_config": "nothing here"}) is None


async def test_other_flavours_do_not_guess(fake_openai_factory: Any) -> None:
    for flavour in ("lmstudio", "generic"):
        backend = OpenAIBackend({"url": fake_openai_factory(flavour).url})
        await backend.refresh()
        assert backend.parallel_slots() is None, flavour
        await backend.aclose()


def test_ollama_slots_from_settings_or_a_local_servers_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_NUM_PARALLEL", raising=False)
    assert OllamaBackend().parallel_slots() is None  # Ollama's API does not say
    assert OllamaBackend({"num_parallel": 3}).parallel_slots() == 3
    monkeypatch.setenv("OLLAMA_NUM_PARALLEL", "4")
    assert OllamaBackend().parallel_slots() == 4
    assert OllamaBackend({"url": "http://gpu-box.lan:11434"}).parallel_slots() is None  # not this machine's
    monkeypatch.setenv("OLLAMA_NUM_PARALLEL", "many")
    assert OllamaBackend().parallel_slots() is None


def test_the_embedded_worker_runs_one_request_at_a_time() -> None:
    assert LlamaCppBackend().parallel_slots() == 1
