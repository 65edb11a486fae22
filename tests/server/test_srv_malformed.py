"""Bad input never yields a 500: malformed JSON, wrong types, missing fields, oversized bodies, both doors.

Each case checks the defined status and error shape, that the catch-all ``internal_error`` was never
reached, and that no queue slot leaked.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import LiveServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MSGS: list[Any] = [{"role": "user", "content": "hi"}]

#: malformed for every JSON endpoint
ANY: list[tuple[str, bytes, str]] = [
    ("bad json", b'{"model": "llama3.2:1b", "messages": [', "malformed JSON"),
    ("not an object", b"[1, 2, 3]", "expected a JSON object"),
    ("empty body", b"", "empty request body"),
    ("not utf-8", b'{"model": "\xff\xfe"}', "malformed JSON"),
    ("deep nesting", b"[" * 30_000 + b"]" * 30_000, "malformed JSON"),
    ("NaN constant", b'{"model": "llama3.2:1b", "temperature": NaN}', "malformed JSON"),
    ("huge int", b'{"model": "m", "max_tokens": ' + b"9" * 5000 + b"}", "malformed JSON"),
    ("missing model", json.dumps({"messages": MSGS, "prompt": "x", "input": "x"}).encode(), "model"),
    ("model wrong type", json.dumps({"model": 3, "messages": MSGS, "prompt": "x", "input": "x"}).encode(), "model"),
]
#: schema errors of the chat endpoints, each naming its field
CHAT: list[tuple[str, dict[str, Any], str]] = [
    ("messages wrong type", {"model": "llama3.2:1b", "messages": "hi"}, "messages"),
    ("bad role", {"model": "llama3.2:1b", "messages": [{"role": "robot"}]}, "messages.0.role"),
    ("content wrong type", {"model": "llama3.2:1b", "messages": [{"role": "user", "content": 5}]}, "content"),
    ("stream wrong type", {"model": "llama3.2:1b", "messages": MSGS, "stream": "yes please"}, "stream"),
    (
        "options wrong type",
        {"model": "llama3.2:1b", "messages": MSGS, "options": [1], "stream_options": [1]},
        "options",
    ),
    ("tools wrong type", {"model": "llama3.2:1b", "messages": MSGS, "tools": "all"}, "tools"),
    (
        "max_tokens wrong type",
        {"model": "llama3.2:1b", "messages": MSGS, "max_tokens": "many", "options": {"num_ctx": "big"}},
        "",
    ),
]
PATHS = [
    "/v1/chat/completions",
    "/api/chat",
    "/api/generate",
    "/v1/completions",
    "/v1/embeddings",
    "/api/embed",
    "/api/show",
    "/api/embeddings",
]


@pytest.fixture
def small(live_factory: Any) -> Iterator[LiveServer]:
    yield live_factory(max_body_bytes=64 * 1024)


def check_shape(path: str, response: httpx.Response) -> None:
    body = response.json()
    if path.startswith("/api/"):
        assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    else:
        assert set(body["error"]) >= {"type", "message", "code"}


def no_internal_errors(live: LiveServer) -> None:
    live.wait_idle()
    assert live.state.metrics.errors.get({"type": "internal_error"}) == 0


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(("name", "body", "needle"), ANY, ids=[c[0] for c in ANY])
def test_malformed_json_on_every_endpoint(small: LiveServer, path: str, name: str, body: bytes, needle: str) -> None:
    response = httpx.post(small.url + path, content=body, headers={"content-type": "application/json"}, timeout=10)
    assert response.status_code == 400, response.text
    check_shape(path, response)
    assert needle in json.dumps(response.json())
    no_internal_errors(small)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat"])
@pytest.mark.parametrize(("name", "body", "field"), CHAT, ids=[c[0] for c in CHAT])
def test_schema_errors_name_the_field(
    small: LiveServer, path: str, name: str, body: dict[str, Any], field: str
) -> None:
    response = httpx.post(small.url + path, json=body, timeout=10)
    assert response.status_code == 400, response.text
    check_shape(path, response)
    message = response.json()["error"] if path.startswith("/api/") else response.json()["error"]["message"]
    assert field in message
    no_internal_errors(small)


@pytest.mark.parametrize("path", ["/v1/embeddings", "/api/embed"])
@pytest.mark.parametrize("dimensions", [0, -1, 1.5])
def test_embedding_dimensions_must_be_a_positive_integer(small: LiveServer, path: str, dimensions: Any) -> None:
    """A negative size would slice the vector from the end (v[:-1]): refused, never silently trimmed."""
    response = httpx.post(
        small.url + path, json={"model": "llama3.2:1b", "input": "hi", "dimensions": dimensions}, timeout=10
    )
    assert response.status_code == 400, response.text
    check_shape(path, response)
    assert "dimensions" in json.dumps(response.json())


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat"])
def test_oversized_body_by_content_length_and_by_streamed_bytes(small: LiveServer, path: str) -> None:
    big = json.dumps({"model": "llama3.2:1b", "messages": [{"role": "user", "content": "x" * 100_000}]}).encode()
    declared = httpx.post(small.url + path, content=big, timeout=10)
    assert declared.status_code == 413
    check_shape(path, declared)

    def chunks() -> Iterator[bytes]:  # chunked transfer: no Content-Length to trust
        for start in range(0, len(big), 8192):
            yield big[start : start + 8192]

    streamed = httpx.post(small.url + path, content=chunks(), timeout=10)
    assert streamed.status_code == 413
    check_shape(path, streamed)
    no_internal_errors(small)


def test_unknown_routes_and_methods_are_typed(live: LiveServer) -> None:
    missing = httpx.get(live.url + "/v1/nothing", timeout=5)
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"
    wrong = httpx.get(live.url + "/api/chat", timeout=5)
    assert wrong.status_code == 405 and set(wrong.json()) == {"error"}
    no_internal_errors(live)


_scalar = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8)
)
_json = st.recursive(
    _scalar,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)
_field_values = st.fixed_dictionaries(
    {},
    optional={
        "model": _json | st.just("llama3.2:1b"),
        "messages": _json | st.just(MSGS),
        "stream": _json,
        "max_tokens": _json,
        "temperature": _json,
        "stop": _json,
        "tools": _json,
        "options": _json,
        "prompt": _json,
        "format": _json,
        "keep_alive": _json,
        "stream_options": _json,
        "n": _json,
        "input": _json,
    },
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=_field_values,
    path=st.sampled_from(
        ["/v1/chat/completions", "/api/chat", "/api/generate", "/v1/completions", "/v1/embeddings", "/api/embed"]
    ),
)
def test_fuzzed_bodies_never_reach_the_catch_all(live: LiveServer, body: dict[str, Any], path: str) -> None:
    response = httpx.post(live.url + path, json=body, timeout=10)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        check_shape(path, response)
    assert live.state.metrics.errors.get({"type": "internal_error"}) == 0
