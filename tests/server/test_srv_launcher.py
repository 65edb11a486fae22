"""``autotune_core.start()`` / ``client_kwargs()`` (a real server subprocess) and the CLI commands."""

from __future__ import annotations

import socket
import time
from typing import Any

import openai
import pytest
from click.testing import CliRunner
from conftest import LiveServer

import autotune_core
from autotune_core.cli import cli
from autotune_core.cli.serve_cmd import register
from autotune_core.server import launcher

register(cli)  # the serve/status commands, as the CLI's _build() would add them


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_loopback_detection() -> None:
    assert launcher.is_loopback("127.0.0.1") and launcher.is_loopback("::1") and launcher.is_loopback("localhost")
    assert not launcher.is_loopback("0.0.0.0") and not launcher.is_loopback("192.168.1.4")
    assert launcher.connect_host("0.0.0.0") == "127.0.0.1"


def test_start_is_idempotent_and_serves(fake_ollama: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("AUTOTUNE_PORT", str(port))
    monkeypatch.setenv("AUTOTUNE_LOAD_PLUGINS", "ollama")
    monkeypatch.setenv("AUTOTUNE_OLLAMA_URL", fake_ollama.url)
    monkeypatch.setenv("AUTOTUNE_API_KEY", "k-123")
    try:
        started = time.monotonic()
        base = autotune_core.start(timeout=30)
        took = time.monotonic() - started
        assert base == f"http://127.0.0.1:{port}"
        assert autotune_core.start(timeout=5) == base
        assert len(launcher._children) == 1, "a second start() must reuse the running server"
        kwargs = autotune_core.client_kwargs()
        assert kwargs == {"base_url": base + "/v1", "api_key": "k-123"}
        client = openai.OpenAI(**kwargs, max_retries=0, timeout=10)
        reply = client.chat.completions.create(
            model="llama3.2:1b", messages=[{"role": "user", "content": "hi"}], max_tokens=8
        )
        assert reply.choices[0].message.content
        assert fake_ollama.requests_to("/api/chat"), "tuned calls use Ollama's native API"
        result = CliRunner().invoke(cli, ["status", "--port", str(port)])
        assert result.exit_code == 0 and "ollama" in result.output and "queue:" in result.output
        assert took < 30
    finally:
        launcher.stop_started()
    assert launcher.health(f"http://127.0.0.1:{port}") is None


def test_status_without_a_server_exits_1() -> None:
    result = CliRunner().invoke(cli, ["status", "--port", str(free_port())])
    assert result.exit_code == 1 and "no autotune server" in result.output


def test_status_json_against_a_live_server(live: LiveServer) -> None:
    port = live.url.rsplit(":", 1)[1]
    result = CliRunner().invoke(cli, ["status", "--port", port, "--json"])
    assert result.exit_code == 0 and '"max_concurrent": 2' in result.output


def test_startup_summary_lists_plugins_in_hook_order(live_factory: Any) -> None:
    from conftest import Recorder

    live = live_factory(Recorder())
    text = launcher.startup_summary(
        live.host, live.host.config, "127.0.0.1", 8765, [("fake", True, ""), ("ollama", False, "connection refused")]
    )
    assert "backend: fake" in text and "profile: balanced" in text
    assert "pre_request: core → recorder" in text and "✗ ollama  (connection refused)" in text
