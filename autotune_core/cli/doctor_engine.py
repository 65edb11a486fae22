"""``autotune doctor``'s engine checks: each backend's own self-test, and what a running server says.

Why here and not in the backends: the core never imports a plugin; a backend offers ``self_test()`` (the
embedded llama.cpp backend generates one token in a throwaway process, so a build that crashes on this CPU
is reported with its fix instead of killing anything), and a running server's ``/health`` holds what only it
knows (a worker that crashed repeatedly and stays down).
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from ..backend import Backend

#: a one-token probe loads a (small) model: more than a reachability check needs
SELF_TEST_TIMEOUT = 120.0


class Report(Protocol):
    def add(self, status: str, check: str, detail: str) -> None: ...


async def self_test(report: Report, backend: Backend) -> None:
    """Run ``backend.self_test()`` and report a failure as ``fail`` with the backend's own explanation."""
    try:
        result = await asyncio.wait_for(backend.self_test(), SELF_TEST_TIMEOUT)
    except Exception as exc:
        report.add("warn", f"engine {backend.name}", f"self-test failed to run: {type(exc).__name__}: {exc}")
        return
    if result is None:
        return
    report.add("ok" if result.ok else "fail", f"engine {backend.name}", result.reason or "self-test passed")


def running_server(report: Report, settings: Any) -> None:
    """If an autotune server answers on the configured address, report the backends it has given up on."""
    from ..server.launcher import connect_host, health

    server = settings.server
    base = f"http://{connect_host(server.host)}:{server.port}"
    data = health(base, server.api_key, timeout=1.0)
    if data is None:
        return
    down = [b for b in data.get("backends", []) if isinstance(b, dict) and not b.get("available")]
    report.add(
        "ok" if not down else "warn",
        "running server",
        f"{base} answers ({data.get('status')})" + ("" if not down else f"; {len(down)} backend(s) down there"),
    )
    for entry in down:
        report.add("warn", f"server backend {entry.get('name')}", str(entry.get("reason") or "not available"))
