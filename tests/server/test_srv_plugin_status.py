"""/health carries each enabled plugin's ``plugin_status`` report; `autotune status` prints it; failures are
isolated; a duck-typed ``status()`` method is not a hook and is not called."""

from __future__ import annotations

from typing import Any

import httpx
from click.testing import CliRunner
from conftest import fake_host, serve

from autotune_core.cli import serve_cmd
from autotune_core.markers import hookimpl


class HealthyPlugin:
    name = "healthy"

    @hookimpl
    def plugin_status(self) -> dict[str, Any]:
        return {"score": 91, "state": "OPTIMAL", "recent_actions": [{"kind": "reduce_context", "why": "ram 90%"}]}


class BrokenStatusPlugin:
    name = "broken-status"

    @hookimpl
    def plugin_status(self) -> dict[str, Any]:
        raise RuntimeError("sensor gone")


class DuckTyped:
    name = "duck"

    def status(self) -> dict[str, Any]:  # not a hook: never called
        raise AssertionError("status() was called")


def test_health_includes_plugin_status_and_isolates_failures() -> None:
    live = serve(fake_host(HealthyPlugin(), BrokenStatusPlugin(), DuckTyped()))
    try:
        data = httpx.get(live.url + "/health", timeout=5).json()
        assert data["plugins"]["healthy"]["score"] == 91
        assert "sensor gone" in data["plugins"]["broken-status"]["error"]
        assert live.host.records["broken-status"].failures == 1
        assert "core" not in data["plugins"] and "duck" not in data["plugins"]
    finally:
        live.stop()


def test_status_command_prints_plugin_status() -> None:
    live = serve(fake_host(HealthyPlugin(), BrokenStatusPlugin(), DuckTyped()))
    try:
        port = live.url.rsplit(":", 1)[1]
        result = CliRunner().invoke(serve_cmd.status, ["--host", "127.0.0.1", "--port", port])
        assert result.exit_code == 0, result.output
        assert "healthy: score=91, state=OPTIMAL" in result.output
        assert "recent_actions: kind=reduce_context, why=ram 90%" in result.output
    finally:
        live.stop()
