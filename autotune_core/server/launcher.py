"""Running the server: in the foreground (``autotune serve``), or as a background process for library
users (:func:`start`, :func:`client_kwargs`).

Only the standard library is imported at module level: ``start()`` must be cheap in the caller's
process, the heavy imports happen in the server process.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Settings, data_dir, load_settings
from ..errors import AutotuneError

if TYPE_CHECKING:
    from ..host import PluginHost

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})

_children: dict[str, subprocess.Popen[bytes]] = {}
_last_base: str | None = None
_last_key: str | None = None


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def connect_host(bind: str) -> str:
    """Where a local client should connect for a given bind address."""
    if bind in ("0.0.0.0", "", "*"):
        return "127.0.0.1"
    if bind == "::":
        return "[::1]"
    return f"[{bind}]" if ":" in bind else bind


def settings_for(config: str | Path | None = None, profile: str | None = None) -> Settings:
    overrides: dict[str, Any] = {"profile": profile} if profile else {}
    return load_settings(Path(config).expanduser() if config else None, overrides=overrides)


def health(base: str, api_key: str | None = None, timeout: float = 0.5) -> dict[str, Any] | None:
    """``GET /health`` as JSON, or None if nothing autotune-like answers."""
    request = urllib.request.Request(base + "/health")
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = json.loads(response.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None
    if isinstance(data, dict) and data.get("status") in ("ok", "degraded"):
        return data
    return None


def start(
    *,
    config: str | Path | None = None,
    host: str | None = None,
    port: int | None = None,
    profile: str | None = None,
    timeout: float = 60.0,
) -> str:
    """Make sure an autotune server answers and return its base URL (idempotent).

    If one already answers on the configured address it is reused; otherwise ``autotune serve``
    is started as a subprocess (log in the data folder) and awaited until ``/health`` answers.
    """
    global _last_base, _last_key
    settings = settings_for(config, profile)
    bind = host or settings.server.host
    bind_port = port or settings.server.port
    base = f"http://{connect_host(bind)}:{bind_port}"
    key = settings.server.api_key
    _last_base, _last_key = base, key
    if health(base, key) is not None:
        return base
    child = _children.get(base)
    if child is None or child.poll() is not None:
        log_dir = data_dir()
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"server-{bind_port}.log"
        argv = [sys.executable, "-m", "autotune_core.server", "--host", bind, "--port", str(bind_port)]
        if config:
            argv += ["--config", str(config)]
        if profile:
            argv += ["--profile", profile]
        with open(log_path, "ab") as log_file:
            child = subprocess.Popen(
                argv,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=dict(os.environ),
            )
        _children[base] = child
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if health(base, key) is not None:
            return base
        if child.poll() is not None:
            tail = _tail(data_dir() / f"server-{bind_port}.log")
            raise AutotuneError(
                f"the autotune server exited with code {child.returncode}:\n{tail}",
                type="server_start_failed",
                status=500,
            )
        time.sleep(0.05)
    raise AutotuneError(
        f"the autotune server did not answer on {base} within {timeout:g} s", type="server_start_failed", status=500
    )


def stop_started() -> None:
    """Stop servers this process started with :func:`start` (tests, notebooks)."""
    for base, child in list(_children.items()):
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(timeout=5)
        _children.pop(base, None)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def client_kwargs(*, config: str | Path | None = None) -> dict[str, str]:
    """Keyword arguments for ``openai.OpenAI(**client_kwargs())``: the /v1 base URL and the API key."""
    if _last_base is not None and config is None:
        base, key = _last_base, _last_key
    else:
        settings = settings_for(config)
        base, key = f"http://{connect_host(settings.server.host)}:{settings.server.port}", settings.server.api_key
    return {"base_url": base + "/v1", "api_key": key or "autotune"}


def startup_summary(
    host: PluginHost, settings: Settings, bind: str, port: int, backends: list[tuple[str, bool, str]]
) -> str:
    """What ``autotune serve`` prints: plugins in hook order, the backend chosen, the profile."""
    lines = [
        f"autotune serving on http://{connect_host(bind)}:{port}  (OpenAI: /v1, Ollama: /api)",
        f"  profile: {settings.profile}",
    ]
    chosen = next((name for name, ok, _ in backends if ok), None)
    lines.append(
        f"  backend: {chosen or 'none available yet'}"
        + (" (forced by config)" if settings.backend else "  (first available in backend_order)")
    )
    for name, ok, reason in backends:
        lines.append(f"    {'✓' if ok else '✗'} {name}" + ("" if ok else f"  ({reason})"))
    for hook in ("pre_request", "choose_num_ctx", "choose_kv_type", "post_response"):
        names = [n for n in host.hook_order(hook) if host.enabled(n)]
        lines.append(f"  {hook}: {' → '.join(names) or '-'}")
    if settings.server.models:
        for model, override in settings.server.models.items():
            lines.append(
                f"  model {model}: profile={override.profile or '-'} plugins={override.plugins} "
                f"disabled={override.disabled}"
            )
    queue = settings.server
    lines.append(
        f"  queue: {queue.max_concurrent} concurrent, {queue.max_queued} queued, "
        f"{queue.queue_timeout:g} s wait; api key {'on' if queue.api_key else 'off'}"
    )
    return "\n".join(lines)


def serve(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    log_level: str = "info",
    announce: bool = True,
) -> None:
    """Run the server in the foreground until interrupted."""
    import uvicorn

    from ..host import PluginHost
    from .app import create_app

    bind = host or settings.server.host
    bind_port = port or settings.server.port
    if not is_loopback(bind) and not settings.server.api_key:
        print(
            f"warning: binding {bind} (not loopback) without an api_key: anyone who can reach this port can "
            "use your models; set [server] api_key or AUTOTUNE_API_KEY",
            file=sys.stderr,
        )
    plugin_host = PluginHost(config=settings)

    def ready(backends: list[tuple[str, bool, str]]) -> None:
        if announce:
            print(startup_summary(plugin_host, settings, bind, bind_port, backends), file=sys.stderr, flush=True)

    app = create_app(plugin_host, on_ready=ready)
    # proxy_headers off: nothing here uses the client address, and X-Forwarded-For from any local process
    # should not be able to change it (one ASGI layer less per request, too)
    config = uvicorn.Config(
        app,
        host=bind,
        port=bind_port,
        log_level=log_level,
        lifespan="on",
        server_header=False,
        access_log=False,
        timeout_graceful_shutdown=5,
        proxy_headers=False,
    )
    uvicorn.Server(config).run()


def main(argv: list[str] | None = None) -> None:
    """``python -m autotune_core.server``: what :func:`start` launches."""
    parser = argparse.ArgumentParser(prog="autotune-server")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--config")
    parser.add_argument("--profile")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    serve(settings_for(args.config, args.profile), host=args.host, port=args.port, log_level=args.log_level)
