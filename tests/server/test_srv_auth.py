"""The optional API key: Bearer, constant-time compare, health stays open but minimal."""

from __future__ import annotations

from typing import Any

import httpx
import ollama
import openai
import pytest
from conftest import LiveServer

from autotune_core.server.auth import authorized

MSGS: list[Any] = [{"role": "user", "content": "hi"}]
KEY = "s3cret-key"


@pytest.fixture
def keyed(live_factory: Any) -> LiveServer:
    return live_factory(api_key=KEY)


def test_authorized_parsing() -> None:
    assert authorized(b"Bearer s3cret-key", KEY.encode())
    assert authorized(b"bearer s3cret-key", KEY.encode())
    assert not authorized(b"Bearer s3cret-keyX", KEY.encode())
    assert not authorized(b"Basic s3cret-key", KEY.encode())
    assert not authorized(None, KEY.encode())


def test_requests_need_the_key(keyed: LiveServer) -> None:
    chat = {"model": "llama3.2:1b", "messages": MSGS, "stream": False}
    missing = httpx.post(keyed.url + "/v1/chat/completions", json=chat, timeout=5)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["error"]["type"] == "authentication_error"
    wrong = httpx.post(keyed.url + "/api/chat", json=chat, headers={"Authorization": "Bearer nope"}, timeout=5)
    assert wrong.status_code == 401 and set(wrong.json()) == {"error"}
    for path in ("/metrics", "/-/plugins", "/api/tags", "/v1/models"):
        assert httpx.get(keyed.url + path, timeout=5).status_code == 401
    assert keyed.fake.plans == []  # nothing reached the backend


def test_sdks_with_the_key(keyed: LiveServer) -> None:
    client = openai.OpenAI(base_url=keyed.url + "/v1", api_key=KEY, max_retries=0, timeout=10)
    assert client.chat.completions.create(model="llama3.2:1b", messages=MSGS).choices[0].message.content
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=keyed.url + "/v1", api_key="bad", max_retries=0, timeout=10).models.list()
    ollama_client = ollama.Client(host=keyed.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    assert ollama_client.chat(model="llama3.2:1b", messages=MSGS).message.content


def test_health_is_open_but_minimal(keyed: LiveServer) -> None:
    anonymous = httpx.get(keyed.url + "/health", timeout=5).json()
    assert anonymous == {"status": "ok"}
    full = httpx.get(keyed.url + "/health", headers={"Authorization": f"Bearer {KEY}"}, timeout=5).json()
    assert "queue" in full and "backends" in full
