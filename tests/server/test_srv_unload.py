"""Freeing a model now through a running server: Ollama's empty /api/generate with keep_alive 0 unloads it on the
backend that serves it (the embedded worker's memory goes back), and `autotune unload` uses it when a server runs."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from autotune_core.cli import _build
from autotune_core.cli import common as cli_common

MODEL = "llama3.2:1b"


def test_empty_generate_with_keep_alive_0_unloads(live: Any) -> None:
    with live.client() as client:
        assert client.post("/api/generate", json={"model": MODEL, "prompt": "hi", "stream": False}).status_code == 200
        assert MODEL in live.fake.loaded
        answer = client.post("/api/generate", json={"model": MODEL, "keep_alive": 0})
        assert answer.status_code == 200, answer.text
        assert answer.json()["done_reason"] == "unload" and answer.json()["done"] is True
        assert MODEL not in live.fake.loaded
        # keep_alive 0 with a prompt is a generation that unloads afterwards, not an unload request
        assert (
            client.post(
                "/api/generate", json={"model": MODEL, "prompt": "hi", "keep_alive": "0s", "stream": False}
            ).json()["done_reason"]
            != "unload"
        )
        missing = client.post("/api/generate", json={"model": "no-such-model", "keep_alive": 0})
        assert missing.status_code == 404 and "error" in missing.json()


def test_autotune_unload_goes_through_a_running_server(live: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    port = live.url.rsplit(":", 1)[1]
    monkeypatch.setenv("AUTOTUNE_PORT", port)
    monkeypatch.setenv("AUTOTUNE_CONFIG", "/nonexistent/autotune.toml")
    cli_common.reset_host()
    try:
        httpx.post(live.url + "/api/generate", json={"model": MODEL, "prompt": "hi", "stream": False}, timeout=10)
        assert MODEL in live.fake.loaded
        result = CliRunner().invoke(_build(), ["unload", MODEL])
        assert result.exit_code == 0, result.output
        assert f"unloaded {MODEL} from fake" in result.output and MODEL not in live.fake.loaded
    finally:
        cli_common.reset_host()
