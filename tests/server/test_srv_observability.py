"""Health, Prometheus metrics, plugin info, plugin routes, plan/profile/conversation headers."""

from __future__ import annotations

import re
from typing import Any

import httpx
from conftest import LiveServer, Recorder
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from autotune_core.context import Choice, fold_stage
from autotune_core.markers import hookimpl
from autotune_core.plugin_report import plugins_report

MSGS: list[Any] = [{"role": "user", "content": "hi"}]


class Sizer:
    """Proposes num_ctx from the request's options (or 2048), a KV type, and flags truncation."""

    name = "sizer"

    @hookimpl
    @fold_stage("propose")
    def choose_num_ctx(self, ctx: Any, request: Any, plan: Any, proposal: Any) -> Any:
        return Choice(int(request.options.get("num_ctx", 2048)), "test sizing")

    @hookimpl
    def choose_kv_type(self, ctx: Any, request: Any, plan: Any, proposal: Any) -> Any:
        return Choice("q8_0", "test kv")

    @hookimpl
    def post_response(self, ctx: Any, request: Any, plan: Any, result: Any) -> None:
        if request.conversation_id == "truncate-me":
            plan.flags["truncated"] = True


class Broken:
    name = "broken"

    @hookimpl
    def pre_request(self, ctx: Any, request: Any, plan: Any) -> None:
        raise RuntimeError("boom")


class Routes:
    name = "routes"

    @hookimpl
    def register_routes(self, register: Any) -> None:
        async def conversations(request: Request) -> Response:
            return JSONResponse({"conversations": []})

        register("/api/conversations", conversations, methods=["GET"])
        register("/v1/models", conversations, methods=["GET"])  # a clash: the core route must win


def metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if labels else "") + r" (\S+)"
    found = re.search(r"^" + pattern + r"$", text, re.MULTILINE)
    assert found, f"{name}{{{wanted}}} not in metrics"
    return float(found.group(1))


def test_health(live: LiveServer) -> None:
    health = httpx.get(live.url + "/health", timeout=5).json()
    assert health["status"] == "ok"
    assert health["backends"] == [{"name": "fake", "available": True, "reason": "", "version": "fake-1"}]
    assert health["queue"] == {
        "active": 0,
        "queued": 0,
        "max_concurrent": 2,
        "limit": 2,
        "max_queued": 16,
        "timeout_s": 120.0,
        "backend_slots": None,
    }
    assert "tier" in health["pressure"]


def test_metrics_after_traffic(live_factory: Any) -> None:
    live: LiveServer = live_factory(Sizer(), Broken())
    with httpx.Client(base_url=live.url, timeout=10) as client:
        first = client.post(
            "/v1/chat/completions",
            json={"model": "llama3.2:1b", "messages": MSGS},
            headers={"X-Conversation-Id": "truncate-me"},
        )
        assert "num_ctx=sizer>2048" in first.headers["x-autotune-plan"]
        client.post(
            "/api/chat", json={"model": "llama3.2:1b", "messages": MSGS, "stream": True, "options": {"num_ctx": 4096}}
        )
        client.post("/api/chat", json={"model": "nope", "messages": MSGS})
        live.wait_idle()
        text = client.get("/metrics").text
    assert metric(text, "autotune_requests_total", door="openai", endpoint="/v1/chat/completions", status="200") == 1
    assert metric(text, "autotune_requests_total", door="ollama", endpoint="/api/chat", status="200") == 1
    assert metric(text, "autotune_requests_total", door="ollama", endpoint="/api/chat", status="404") == 1
    assert metric(text, "autotune_errors_total", type="model_not_found") == 1
    assert metric(text, "autotune_ttft_seconds_count") == 1  # the stream; the fake's non-streaming answer has none
    assert metric(text, "autotune_overhead_seconds_count") == 2
    assert metric(text, "autotune_effective_num_ctx", model="llama3.2:1b") == 4096  # the last one
    assert metric(text, "autotune_truncation_events_total", model="llama3.2:1b") == 1
    assert metric(text, "autotune_backend_reloads", backend="fake") == 1  # 2048 -> 4096 reloaded the runner
    assert metric(text, "autotune_plugin_failures", plugin="broken") == 2
    assert metric(text, "autotune_tokens_total", kind="completion") > 0
    assert metric(text, "autotune_queue_active") == 0
    assert metric(text, "autotune_queue_max_concurrent") == live.state.queue.max_concurrent
    live.host.cap_concurrency("session-advisor", 1, "test")  # what the advisor does under pressure: the gauge follows
    assert metric(httpx.get(live.url + "/metrics", timeout=5).text, "autotune_queue_max_concurrent") == 1
    # the KV type is a server setting on the fake backend, so it is advice, never sent: no gauge for it
    assert "autotune_kv_type_info{" not in text


def test_plugins_endpoint_and_plugin_routes(live_factory: Any) -> None:
    live: LiveServer = live_factory(Recorder(), Routes())
    info = httpx.get(live.url + "/-/plugins", timeout=5).json()
    names = {p["name"] for p in info["plugins"]}
    assert {"core", "recorder", "routes", "fake-backend"} <= names
    assert [row["plugin"] for row in info["hook_order"]["pre_request"]] == ["core", "recorder"]
    # the same report as `autotune plugins list --json` for this host, plus the server's stack
    assert info == {**plugins_report(live.host), "stack": None}
    assert httpx.get(live.url + "/api/conversations", timeout=5).json() == {"conversations": []}
    assert httpx.get(live.url + "/v1/models", timeout=5).json()["object"] == "list"


def test_profile_and_conversation_headers(live_factory: Any) -> None:
    recorder = Recorder()
    live: LiveServer = live_factory(recorder)
    response = httpx.post(
        live.url + "/api/chat",
        timeout=10,
        json={"model": "llama3.2:1b", "messages": MSGS, "stream": False},
        headers={"X-Autotune-Profile": "quality", "X-Conversation-Id": "c-1"},
    )
    assert response.status_code == 200 and response.headers["x-autotune-profile"] == "quality"
    assert live.fake.plans[-1].profile == "quality" and recorder.requests[-1].conversation_id == "c-1"
    assert float(response.headers["x-autotune-overhead-ms"]) < 1000
    bad = httpx.post(
        live.url + "/api/chat",
        json={"model": "llama3.2:1b", "messages": MSGS},
        headers={"X-Autotune-Profile": "turbo"},
        timeout=10,
    )
    assert bad.status_code == 400 and "fast, balanced, quality" in bad.json()["error"]
