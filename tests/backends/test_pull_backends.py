"""Pulled models reach the backends: the llamacpp catalog serves the pull cache; Ollama pulls via /api/pull."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes import FakeOllama
from fakes.fake_hub import FakeHub

from autotune_core.cli import _build
from autotune_core.cli.common import reset_host
from autotune_core.errors import ModelNotFound, UpstreamError
from autotune_core.hub import pull_dir, pull_gguf
from autotune_core.model_refs import parse_ref
from autotune_core.pull_progress import Pullable, PullEvent
from autotune_plugins.backends.llamacpp import LlamaCppBackend
from autotune_plugins.backends.llamacpp.catalog import BASE_NOTE, find_pulled, pulled_models
from autotune_plugins.backends.ollama import OllamaBackend

REPO = "owner/tiny-GGUF"


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as fake:
        fake.add_repo(REPO, {"tiny-Q4_K_M.gguf": os.urandom(4096), "tiny-Q8_0.gguf": os.urandom(8192)})
        fake.add_repo("ggml-org/gemma-3-270m-it-GGUF", {"gemma-3-270m-it-Q8_0.gguf": os.urandom(2048)})
        yield fake


# -- llamacpp: the pull cache ------------------------------------------------------------------------------------


async def test_a_pulled_gguf_is_listed_and_resolved_by_the_llamacpp_backend(hub: FakeHub) -> None:
    backend = LlamaCppBackend()
    assert not [m for m in await backend.list_models() if m.name.startswith("hf.co/")]
    pull_gguf(parse_ref(REPO, quant="Q8_0"), endpoint=hub.url, token=False)
    pull_gguf(parse_ref("gemma3-270m-it"), endpoint=hub.url, token=False)
    entries = {m.name: m for m in await backend.list_models()}
    tiny = entries[f"hf.co/{REPO}:Q8_0"]
    assert (tiny.backend, tiny.size_bytes, tiny.quantization) == ("llamacpp", 8192, "Q8_0")
    assert tiny.aliases == [f"{REPO}:Q8_0"] and tiny.digest and len(tiny.digest) == 64
    gemma = entries["hf.co/ggml-org/gemma-3-270m-it-GGUF:Q8_0"]
    assert "gemma3-270m-it" in gemma.aliases and gemma.note is None
    # every name a client may use resolves to the file on disk
    path = str(pull_dir() / REPO / "tiny-Q8_0.gguf")
    for name in (f"hf.co/{REPO}:Q8_0", f"{REPO}:q8_0", f"HF.CO/{REPO}:Q8_0"):
        assert backend.resolve_path(name) == (f"hf.co/{REPO}:Q8_0", path)
    assert backend.resolve_path("gemma3-270m-it")[1].endswith("gemma-3-270m-it-Q8_0.gguf")
    with pytest.raises(ModelNotFound) as info:
        backend.resolve_path(f"hf.co/{REPO}:Q4_K_M")  # never pulled
    assert f"hf.co/{REPO}:Q8_0" in info.value.available


async def test_the_bundled_base_model_says_it_is_not_for_chat() -> None:
    if not LlamaCppBackend()._bundled_available():
        pytest.skip("the bundled Gemma 3 270M package is not installed")
    (entry,) = [m for m in await LlamaCppBackend().list_models() if m.name == "gemma3-270m"]
    assert entry.note == BASE_NOTE
    assert "base model" in BASE_NOTE and "autotune pull gemma3-270m-it" in BASE_NOTE


def test_unfinished_or_altered_files_are_not_served(hub: FakeHub) -> None:
    pull_gguf(parse_ref(REPO, quant="Q4_K_M"), endpoint=hub.url, token=False)
    assert [m.name for m in pulled_models()] == [f"hf.co/{REPO}:Q4_K_M"]
    folder = pull_dir() / REPO
    (folder / "tiny-Q8_0.gguf.0123456789ab.part").write_bytes(b"half")  # a download in progress
    assert [m.name for m in pulled_models()] == [f"hf.co/{REPO}:Q4_K_M"]
    with (folder / "tiny-Q4_K_M.gguf").open("ab") as handle:  # changed by hand after the verified pull
        handle.write(b"x")
    assert pulled_models() == [] and find_pulled(f"hf.co/{REPO}:Q4_K_M") is None


def test_two_files_of_one_quant_get_distinct_names(hub: FakeHub) -> None:
    hub.add_repo("owner/two-GGUF", {"a-Q4_K_M.gguf": b"GGUF-a", "b-Q4_K_M.gguf": b"GGUF-bb"})
    for name in ("a-Q4_K_M.gguf", "b-Q4_K_M.gguf"):
        pull_gguf(parse_ref("owner/two-GGUF", file=name), endpoint=hub.url, token=False)
    names = {m.name: Path(m.path).name for m in pulled_models()}
    assert names == {"hf.co/owner/two-GGUF:Q4_K_M": "a-Q4_K_M.gguf", "hf.co/owner/two-GGUF:b-Q4_K_M": "b-Q4_K_M.gguf"}
    found = find_pulled("owner/two-GGUF:b-Q4_K_M")
    assert found is not None and found.path.endswith("b-Q4_K_M.gguf")


# -- Ollama: /api/pull -----------------------------------------------------------------------------------------


def _ollama(fake: FakeOllama) -> OllamaBackend:
    return OllamaBackend({"url": fake.url, "timeout": 5.0})


async def test_ollama_pull_streams_progress_and_the_model_appears(fake_ollama: FakeOllama) -> None:
    backend = _ollama(fake_ollama)
    assert isinstance(backend, Pullable)
    try:
        assert "qwen2.5:0.5b" not in [m.name for m in await backend.list_models()]
        events = [e async for e in backend.pull("qwen2.5:0.5b")]
        assert events[0].status == "pulling manifest" and events[-1] == PullEvent(status="success")
        layer = [e for e in events if e.digest and e.total == fake_ollama.registry["qwen2.5:0.5b"].size]
        assert layer[0].completed is None and layer[-1].completed == layer[-1].total  # omitempty while 0
        assert fake_ollama.pulls == ["qwen2.5:0.5b"]
        assert fake_ollama.last_request("/api/pull").json == {"model": "qwen2.5:0.5b", "stream": True}
        assert "qwen2.5:0.5b" in [m.name for m in await backend.list_models()]
    finally:
        await backend.aclose()


async def test_ollama_pull_errors_carry_ollamas_message(fake_ollama: FakeOllama) -> None:
    backend = _ollama(fake_ollama)
    try:
        with pytest.raises(UpstreamError, match="pull model manifest: file does not exist"):
            [e async for e in backend.pull("no-such-model:7b")]
        fake_ollama.pull_error = "max retries exceeded: unexpected EOF"
        with pytest.raises(UpstreamError, match="unexpected EOF"):
            [e async for e in backend.pull("qwen2.5:0.5b")]
        assert "qwen2.5:0.5b" not in [m.name for m in await backend.list_models()], "a failed pull adds nothing"
        with pytest.raises(UpstreamError, match="invalid model name"):
            [e async for e in backend.pull("bad name!")]
    finally:
        await backend.aclose()


def _cli(args: list[str]) -> object:
    reset_host()
    return CliRunner().invoke(_build(), args, catch_exceptions=False)


def test_cli_pull_through_ollama(fake_ollama: FakeOllama, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOTUNE_OLLAMA_URL", fake_ollama.url)
    result = _cli(["pull", "qwen2.5:0.5b", "--json"])  # an Ollama library name: goes to Ollama by itself
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert json.loads(result.stdout)["model"] == "qwen2.5:0.5b"  # type: ignore[attr-defined]
    # an alias, sent to Ollama in the hf.co/OWNER/REPO:QUANT form Ollama pulls from the Hub itself
    result = _cli(["pull", "gemma3-270m-it", "--backend", "ollama"])
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert fake_ollama.pulls == ["qwen2.5:0.5b", "hf.co/ggml-org/gemma-3-270m-it-GGUF:Q8_0"]
    assert "pulled hf.co/ggml-org/gemma-3-270m-it-GGUF:Q8_0 into Ollama" in result.stdout  # type: ignore[attr-defined]
    result = CliRunner().invoke(_build(), ["pull", "missing:1b"])
    assert result.exit_code == 1 and "file does not exist" in result.output and "Traceback" not in result.output


def test_cli_pull_to_the_embedded_backend_then_models_lists_it(hub: FakeHub) -> None:
    result = _cli(["pull", f"hf.co/{REPO}", "--endpoint", hub.url])
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert f"serve it as hf.co/{REPO}:Q4_K_M" in result.stdout  # type: ignore[attr-defined]
    assert Path(pull_dir() / REPO / "tiny-Q4_K_M.gguf").is_file()
    listed = json.loads(_cli(["models", "--json"]).stdout)  # type: ignore[attr-defined]
    assert f"hf.co/{REPO}:Q4_K_M" in [m["name"] for m in listed if m["backend"] == "llamacpp"]
    table = _cli(["models"]).stdout  # type: ignore[attr-defined]
    assert f"hf.co/{REPO}:Q4_K_M" in table
    if "gemma3-270m" in [m["name"] for m in listed]:  # the bundled base model says what it is, under the table
        assert f"gemma3-270m: {BASE_NOTE}" in table


def test_cli_pull_refuses_what_it_cannot_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOTUNE_BACKEND", "llamacpp")  # forced: an Ollama-style name is not a Hub reference
    result = _cli(["pull", "llama3.2:1b"])
    assert result.exit_code == 2  # type: ignore[attr-defined]
    assert "cannot read 'llama3.2:1b' as a Hugging Face model" in result.output  # type: ignore[attr-defined]
    assert "hf.co/OWNER/REPO:QUANT" in result.output  # type: ignore[attr-defined]
    result = _cli(["pull", "owner/repo", "--file", "a.gguf", "--quant", "Q8_0"])
    assert result.exit_code == 2 and "not both" in result.output  # type: ignore[attr-defined]
