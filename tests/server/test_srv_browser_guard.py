"""Web pages cannot drive or read the server (Host check against DNS rebinding, Origin allow-list), and allowed
local UIs get working CORS: on both doors, the ops routes and a plugin route (recall's /api/conversations)."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import LiveServer, fake_host, serve

from autotune_core.config import load_settings
from autotune_core.errors import ConfigError
from autotune_core.server import create_app
from autotune_core.server.guard import EXPOSED_HEADERS, HostRules, OriginRules
from autotune_plugins.recall import RecallPlugin

CHAT: dict[str, Any] = {"model": "llama3.2:1b", "messages": [{"role": "user", "content": "hi"}], "stream": False}
EVIL = "http://evil.example"
LOCAL_UI = "http://localhost:3000"
KEY = "s3cret-key"


def recall_server(tmp_path: Path, **server: Any) -> LiveServer:
    host = fake_host(RecallPlugin(), **server)
    host.config.plugins.settings["recall"] = {"path": str(tmp_path / "memory.db")}
    return serve(host)


@pytest.fixture
def guarded(tmp_path: Path) -> Any:
    live = recall_server(tmp_path)
    yield live
    live.stop(wait=False)


def port(live: LiveServer) -> int:
    return int(live.url.rsplit(":", 1)[1])


def post_chat(live: LiveServer, path: str, **headers: str) -> httpx.Response:
    return httpx.post(live.url + path, json=CHAT, headers=headers, timeout=5)


def conversations(live: LiveServer) -> list[Any]:
    """What the recall store holds, read the way a trusted client (no Origin) does."""
    response = httpx.get(live.url + "/api/conversations", timeout=5)
    assert response.status_code == 200
    return list(response.json()["conversations"])


# -- Host: DNS rebinding -----------------------------------------------------------------------------------


def test_foreign_host_is_refused_on_every_route_with_the_doors_error_shape(guarded: LiveServer) -> None:
    host = f"attacker.example:{port(guarded)}"
    openai_error = post_chat(guarded, "/v1/chat/completions", Host=host)
    assert openai_error.status_code == 403
    body = openai_error.json()["error"]
    assert body["type"] == "permission_error" and body["code"] == "host_not_allowed"
    assert "attacker.example" in body["message"] and "allowed_hosts" in body["message"]
    assert "AUTOTUNE_ALLOWED_HOSTS=attacker.example" in body["message"]
    ollama_error = post_chat(guarded, "/api/chat", Host=host)
    assert ollama_error.status_code == 403 and set(ollama_error.json()) == {"error"}
    assert "allowed_hosts" in ollama_error.json()["error"]
    for method, path in (
        ("GET", "/api/conversations"),
        ("POST", "/api/conversations"),
        ("GET", "/metrics"),
        ("GET", "/-/plugins"),
        ("GET", "/health"),
        ("GET", "/v1/models"),
        ("GET", "/api/tags"),
    ):
        refused = httpx.request(method, guarded.url + path, headers={"Host": host}, timeout=5)
        assert refused.status_code == 403, path
        assert "access-control-allow-origin" not in refused.headers
    assert guarded.fake.plans == []  # nothing reached the backend
    assert conversations(guarded) == []  # the refused POST created nothing


@pytest.mark.parametrize(
    "name", ["localhost", "127.0.0.1", "127.0.0.2", "[::1]", "app.localhost", "LocalHost", "localhost."]
)
def test_loopback_hosts_pass(guarded: LiveServer, name: str) -> None:
    response = post_chat(guarded, "/v1/chat/completions", Host=f"{name}:{port(guarded)}")
    assert response.status_code == 200, response.text
    assert httpx.get(guarded.url + "/api/tags", headers={"Host": name}, timeout=5).status_code == 200


def test_the_machines_name_and_the_address_it_arrived_on_pass(guarded: LiveServer) -> None:
    assert post_chat(guarded, "/api/chat", Host=socket.gethostname()).status_code == 200
    rules = HostRules.build([], bind="192.168.1.5")
    assert rules.allows("192.168.1.5") and not rules.allows("192.168.1.6")
    assert not HostRules.build([], bind="0.0.0.0").allows("attacker.example")


def test_allowed_hosts_config_exact_suffix_and_any(tmp_path: Path) -> None:
    live = recall_server(tmp_path, allowed_hosts=["mybox.lan", "*.home.arpa"])
    try:
        for name, status in (
            ("mybox.lan", 200),
            ("MYBOX.LAN:8765", 200),
            ("nas.home.arpa", 200),
            ("home.arpa", 403),
            ("mybox.lan.evil.example", 403),
            ("evil.example", 403),
        ):
            assert post_chat(live, "/v1/chat/completions", Host=name).status_code == status, name
    finally:
        live.stop(wait=False)
    anything = recall_server(tmp_path, allowed_hosts=["*"])
    try:
        assert post_chat(anything, "/api/chat", Host="whatever.example").status_code == 200
    finally:
        anything.stop(wait=False)


def test_environment_lists_and_bad_entries() -> None:
    settings = load_settings(
        Path("/nonexistent/config.toml"),
        env={
            "AUTOTUNE_ALLOWED_HOSTS": "mybox.lan, *.home.arpa",
            "AUTOTUNE_ORIGINS": "chrome-extension://*,http://ui.lan",
        },
    )
    assert settings.server.allowed_hosts == ["mybox.lan", "*.home.arpa"]
    assert settings.server.allowed_origins == ["chrome-extension://*", "http://ui.lan"]
    for server in (
        {"allowed_origins": ["evil.example"]},
        {"allowed_hosts": ["http://mybox.lan/"]},
        {"allowed_hosts": ["a*b.lan"]},
    ):
        with pytest.raises(ConfigError, match=r"server\.allowed_"):
            create_app(fake_host(**server), sampler=False)


# -- Origin: cross-site pages --------------------------------------------------------------------------------


def test_foreign_origin_is_refused_before_any_work(guarded: LiveServer) -> None:
    # the "simple" request a page can send without a preflight
    simple = {"Origin": EVIL, "Content-Type": "text/plain"}
    for path in ("/v1/chat/completions", "/api/chat", "/api/generate"):
        response = httpx.post(
            guarded.url + path, content=b'{"model":"llama3.2:1b","prompt":"x","messages":[]}', headers=simple, timeout=5
        )
        assert response.status_code == 403, path
        assert "access-control-allow-origin" not in response.headers
    error = post_chat(guarded, "/v1/chat/completions", Origin=EVIL).json()["error"]
    assert error["code"] == "origin_not_allowed" and "allowed_origins" in error["message"]
    assert "AUTOTUNE_ORIGINS=http://evil.example" in error["message"]
    assert "AUTOTUNE_ORIGINS" in post_chat(guarded, "/api/chat", Origin=EVIL).json()["error"]
    created = httpx.post(guarded.url + "/api/conversations", json={"title": "x"}, headers={"Origin": EVIL}, timeout=5)
    assert created.status_code == 403
    for path in ("/api/conversations", "/metrics", "/-/plugins", "/health", "/v1/models"):
        assert httpx.get(guarded.url + path, headers={"Origin": EVIL}, timeout=5).status_code == 403, path
    assert guarded.fake.plans == [] and conversations(guarded) == []


def test_foreign_preflight_is_refused(guarded: LiveServer) -> None:
    response = httpx.options(
        guarded.url + "/v1/chat/completions",
        timeout=5,
        headers={
            "Origin": EVIL,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert response.status_code == 403 and "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize(
    "origin",
    [
        LOCAL_UI,
        "http://127.0.0.1:5173",
        "https://localhost",
        "http://[::1]:8080",
        "http://0.0.0.0:3000",
        "app://obsidian.md",
        "tauri://localhost",
        "vscode-webview://1abc",
        "file://",
    ],
)
def test_default_local_origins_get_cors_headers(guarded: LiveServer, origin: str) -> None:
    response = post_chat(guarded, "/v1/chat/completions", Origin=origin)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == origin
    assert "Origin" in response.headers.get_list("vary")
    exposed = response.headers["access-control-expose-headers"]
    assert "X-Autotune-Plan" in exposed and "X-Autotune-Backend" in exposed
    assert response.headers["x-autotune-backend"] == "fake"  # a header the UI may now read is really there


def test_every_autotune_response_header_is_exposed_to_browsers() -> None:
    """A new ``X-Autotune-*`` header a browser UI cannot read is a bug; this finds it in the sources."""
    root = Path(__file__).resolve().parents[2]
    sources = [*(root / "autotune_core").rglob("*.py"), *(root / "plugins").rglob("*.py")]
    names = {m for path in sources for m in re.findall(r"X-Autotune-[A-Za-z-]*[A-Za-z]", path.read_text())}
    assert "X-Autotune-Plan" in names
    exposed = {h.strip() for h in EXPOSED_HEADERS.split(",")}
    assert names <= exposed, f"add {sorted(names - exposed)} to guard.EXPOSED_HEADERS"


@pytest.mark.parametrize(
    "origin",
    [
        "http://localhost.evil.example",
        "http://127.0.0.2:3000",
        "null",
        "chrome-extension://abcdef",
        "moz-extension://1234",
        "https://localhost.evil:1",
    ],
)
def test_look_alikes_extensions_and_null_are_refused_by_default(guarded: LiveServer, origin: str) -> None:
    assert post_chat(guarded, "/api/chat", Origin=origin).status_code == 403


def test_both_doors_and_the_plugin_route_answer_an_allowed_origin(guarded: LiveServer) -> None:
    ollama = post_chat(guarded, "/api/chat", Origin=LOCAL_UI)
    assert ollama.status_code == 200 and ollama.json()["message"]["content"]
    assert ollama.headers["access-control-allow-origin"] == LOCAL_UI
    created = httpx.post(
        guarded.url + "/api/conversations", json={"title": "ui"}, headers={"Origin": LOCAL_UI}, timeout=5
    )
    assert created.status_code == 201 and created.headers["access-control-allow-origin"] == LOCAL_UI
    listed = httpx.get(guarded.url + "/api/conversations", headers={"Origin": LOCAL_UI}, timeout=5)
    assert listed.headers["access-control-allow-origin"] == LOCAL_UI
    assert [c["id"] for c in listed.json()["conversations"]] == [created.json()["conversation_id"]]
    # an error answer carries them too, so the UI can show it
    missing = httpx.get(guarded.url + "/v1/nope", headers={"Origin": LOCAL_UI}, timeout=5)
    assert missing.status_code == 404 and missing.headers["access-control-allow-origin"] == LOCAL_UI


def test_streams_carry_the_cors_headers_on_both_doors(guarded: LiveServer) -> None:
    for path, last in (("/v1/chat/completions", b"data: [DONE]"), ("/api/chat", b'"done":true')):
        with httpx.stream(
            "POST", guarded.url + path, json={**CHAT, "stream": True}, headers={"Origin": LOCAL_UI}, timeout=5
        ) as response:
            assert response.status_code == 200
            assert response.headers["access-control-allow-origin"] == LOCAL_UI
            body = response.read()
        assert last in body, path


def test_no_origin_is_unaffected(guarded: LiveServer) -> None:
    response = post_chat(guarded, "/v1/chat/completions")
    assert response.status_code == 200 and "access-control-allow-origin" not in response.headers
    assert "vary" not in response.headers


@pytest.mark.parametrize(
    "path",
    ["/v1/chat/completions", "/api/chat", "/api/conversations/abc", "/metrics", "/v1/embeddings", "/anything/else"],
)
def test_preflight_is_answered_for_every_route(guarded: LiveServer, path: str) -> None:
    requested = "authorization, content-type, x-stainless-os, x-stainless-retry-count, x-stainless-new-one"
    response = httpx.options(
        guarded.url + path,
        timeout=5,
        headers={
            "Origin": LOCAL_UI,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": requested,
        },
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == LOCAL_UI
    methods = {m.strip() for m in response.headers["access-control-allow-methods"].split(",")}
    assert {"GET", "POST", "DELETE", "OPTIONS"} <= methods
    allowed = {h.strip() for h in response.headers["access-control-allow-headers"].split(",")}
    assert set(requested.replace(" ", "").split(",")) <= allowed
    assert {"x-autotune-profile", "x-conversation-id", "openai-beta"} <= allowed
    assert int(response.headers["access-control-max-age"]) > 0
    assert "access-control-allow-private-network" not in response.headers
    assert guarded.fake.plans == []


def test_preflight_leaves_out_unknown_headers_and_answers_private_network(guarded: LiveServer) -> None:
    response = httpx.options(
        guarded.url + "/api/chat",
        timeout=5,
        headers={
            "Origin": LOCAL_UI,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, x-evil",
            "Access-Control-Request-Private-Network": "true",
        },
    )
    assert response.status_code == 204
    assert "x-evil" not in response.headers["access-control-allow-headers"]
    assert response.headers["access-control-allow-private-network"] == "true"


def test_allowed_origins_config_wildcards_and_any(tmp_path: Path) -> None:
    live = recall_server(
        tmp_path, allowed_origins=["chrome-extension://*", "https://*.example.com", "http://ui.lan:8080/"]
    )
    try:
        for origin, status in (
            ("chrome-extension://abcdef", 200),
            ("https://chat.example.com", 200),
            ("http://ui.lan:8080", 200),
            ("http://ui.lan:8081", 403),
            (LOCAL_UI, 200),
            ("https://example.com.evil.net", 403),
            ("moz-extension://1234", 403),
        ):
            response = post_chat(live, "/v1/chat/completions", Origin=origin)
            assert response.status_code == status, origin
    finally:
        live.stop(wait=False)
    anything = recall_server(tmp_path, allowed_origins=["*"])
    try:
        response = post_chat(anything, "/api/chat", Origin=EVIL)
        assert response.status_code == 200 and response.headers["access-control-allow-origin"] == EVIL
    finally:
        anything.stop(wait=False)


def test_same_origin_under_an_allowed_name_passes_but_not_with_any_host(tmp_path: Path) -> None:
    live = recall_server(tmp_path, allowed_hosts=["mybox.lan"])
    try:
        assert post_chat(live, "/api/chat", Host="mybox.lan:8765", Origin="http://mybox.lan:8765").status_code == 200
        assert post_chat(live, "/api/chat", Host="mybox.lan:8765", Origin="http://other.lan:8765").status_code == 403
    finally:
        live.stop(wait=False)
    anything = recall_server(tmp_path, allowed_hosts=["*"])
    try:  # the rebinding page is "same origin" with its own name: '*' must not make that pass
        rebound = post_chat(anything, "/api/chat", Host="attacker.example", Origin="http://attacker.example")
        assert rebound.status_code == 403
    finally:
        anything.stop(wait=False)


def test_origin_rules_forms() -> None:
    rules = OriginRules.build(["https://*.example.com", "http://192.168.1.*:3000"], defaults=())
    assert rules.allows("https://a.example.com") and rules.allows("HTTPS://A.EXAMPLE.COM")
    assert rules.allows("http://192.168.1.20:3000") and not rules.allows("http://192.168.1.20:3001")
    assert not rules.allows("https://example.com") and not rules.allows("http://a.example.com")
    defaults = OriginRules.build([])
    assert defaults.allows("http://localhost:3000") and defaults.allows("http://localhost")
    assert not defaults.allows("http://localhost:3000.evil.example") and not defaults.allows("http://localhost:")
    assert not defaults.allows("http://localhostevil.example")


# -- the API key on sensitive routes ------------------------------------------------------------------------


def test_with_a_key_memory_routes_need_it_and_preflights_do_not(tmp_path: Path) -> None:
    live = recall_server(tmp_path, api_key=KEY)
    try:
        auth = {"Authorization": f"Bearer {KEY}"}
        for path in (
            "/api/conversations",
            "/api/conversations/abc",
            "/api/conversations/abc/export",
            "/metrics",
            "/-/plugins",
        ):
            refused = httpx.get(live.url + path, headers={"Origin": LOCAL_UI}, timeout=5)
            assert refused.status_code == 401, path
            assert refused.headers["access-control-allow-origin"] == LOCAL_UI  # the UI can read why
        assert httpx.post(live.url + "/api/conversations", json={}, timeout=5).status_code == 401
        assert httpx.get(live.url + "/api/conversations", headers=auth, timeout=5).status_code == 200
        preflight = httpx.options(
            live.url + "/api/conversations",
            timeout=5,
            headers={
                "Origin": LOCAL_UI,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code == 204 and "authorization" in preflight.headers["access-control-allow-headers"]
        # the key does not replace the Host and Origin checks
        assert (
            httpx.get(live.url + "/api/conversations", headers={**auth, "Origin": EVIL}, timeout=5).status_code == 403
        )
        assert (
            httpx.get(
                live.url + "/api/conversations", headers={**auth, "Host": "attacker.example"}, timeout=5
            ).status_code
            == 403
        )
    finally:
        live.stop(wait=False)


def test_the_non_loopback_warning_is_kept(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import uvicorn

    from autotune_core.server import launcher

    monkeypatch.setattr(uvicorn.Server, "run", lambda self: None)
    launcher.serve(load_settings(Path("/nonexistent/config.toml"), env={}), host="0.0.0.0", announce=False)
    assert "without an api_key" in capsys.readouterr().err
