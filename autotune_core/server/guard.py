"""Keeps web pages out of the local server: a ``Host`` allow-list (DNS rebinding), an ``Origin`` allow-list
and CORS for the browser UIs that are allowed in.

Listening on 127.0.0.1 does not keep browsers out: any page the user visits can send requests to it, and a
page whose name was rebound to 127.0.0.1 can read the answers. So, as Ollama does after its advisory:

- a request whose ``Host`` is not loopback, the address it arrived on, the machine's name or a configured
  name is refused (403) — a rebinding page always carries its own name there;
- a request with an ``Origin`` outside the allow-list (Ollama's defaults plus ``allowed_origins``) is refused
  (403) before any work, preflight or not; an allowed one gets CORS headers, its preflight a 204.

Requests without ``Origin`` (SDKs, curl, server-side UIs) only pay the header scan and one set lookup:
everything else is compiled once, when the app is built. Pure ASGI, outermost, so refusals cost nothing
downstream and every answer (401s included) carries CORS headers a local UI can read.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import ServerConfig
from ..errors import AutotuneError, ConfigError
from .errors import door_for_path, dumps, error_body, error_headers

log = logging.getLogger("autotune.server")

#: Ollama's default origins (envconfig.AllowedOrigins), plus [::1]; extensions only by configuration
DEFAULT_ORIGINS: tuple[str, ...] = (
    *(
        f"{scheme}://{name}{port}"
        for name in ("localhost", "127.0.0.1", "[::1]", "0.0.0.0")
        for scheme in ("http", "https")
        for port in ("", ":*")
    ),
    "app://*",
    "file://*",
    "tauri://*",
    "vscode-webview://*",
    "vscode-file://*",
)

#: request headers a browser client may send (Ollama's list, the OpenAI SDK's, autotune's own)
ALLOWED_HEADERS: tuple[str, ...] = (
    "authorization",
    "content-type",
    "accept",
    "user-agent",
    "x-requested-with",
    "openai-beta",
    "openai-organization",
    "openai-project",
    "x-autotune-profile",
    "x-conversation-id",
)
#: response headers a browser client may read
EXPOSED_HEADERS = (
    "X-Autotune-Plan, X-Autotune-Overhead-Ms, X-Autotune-Profile, X-Autotune-Backend, "
    "X-Autotune-Queued, X-Autotune-Warning, Retry-After"
)
PREFLIGHT_MAX_AGE = "600"

_CACHE_LIMIT = 256


class Forbidden(AutotuneError):
    type = "permission_error"
    status = 403
    code = "forbidden"


def _bare_host(value: str) -> str:
    """``name``, ``name:port``, ``[v6]:port`` or a raw IPv6 address, as a lower-case name without port."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value[1:]
    if value.count(":") == 1:
        value = value.partition(":")[0]
    return value.rstrip(".")


def _is_loopback(name: str) -> bool:
    if name == "localhost" or name.endswith(".localhost"):  # RFC 6761: browsers never ask DNS for these
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified  # an address, not a name: cannot be rebound


@dataclass(frozen=True)
class HostRules:
    """Names accepted in ``Host`` besides loopback and the address the request arrived on."""

    names: frozenset[str]
    suffixes: tuple[str, ...]
    any: bool

    @classmethod
    def build(cls, allowed: Iterable[str], bind: str | None = None) -> HostRules:
        names = {_bare_host(socket.gethostname())}
        if bind and bind not in ("0.0.0.0", "::", "", "*"):
            names.add(_bare_host(bind))
        suffixes = []
        wildcard = False
        for raw in allowed:
            entry = raw.strip().lower()
            if entry == "*":
                wildcard = True
            elif entry.startswith("*.") and "*" not in entry[2:]:
                suffixes.append(entry[1:])
            elif not entry or "*" in entry or "/" in entry:
                raise ConfigError(f"server.allowed_hosts: {raw!r} is not a host name, an address, '*.suffix' or '*'")
            else:
                names.add(_bare_host(entry))
        return cls(frozenset(names), tuple(suffixes), wildcard)

    def allows(self, name: str) -> bool:
        return name in self.names or _is_loopback(name) or any(name.endswith(suffix) for suffix in self.suffixes)


@dataclass(frozen=True)
class OriginRules:
    """``OLLAMA_ORIGINS`` forms: exact origins, ``*`` wildcards anywhere (``chrome-extension://*``,
    ``http://localhost:*``, ``https://*.example.com``), ``*`` alone for any origin."""

    exact: frozenset[str]
    pattern: re.Pattern[str] | None
    any: bool

    @classmethod
    def build(cls, allowed: Iterable[str], defaults: Iterable[str] = DEFAULT_ORIGINS) -> OriginRules:
        exact: set[str] = set()
        wildcards: list[str] = []
        wildcard_all = False
        for raw in (*defaults, *allowed):
            entry = raw.strip().lower().rstrip("/")
            if entry == "*":
                wildcard_all = True
            elif entry == "null":
                exact.add(entry)
            elif "://" not in entry:
                raise ConfigError(
                    f"server.allowed_origins: {raw!r} is not an origin (scheme://host[:port], '*' wildcards allowed)"
                )
            elif "*" in entry:
                wildcards.append(_wildcard(entry))
            else:
                exact.add(entry)
        pattern = re.compile("(?:" + "|".join(wildcards) + r")\Z") if wildcards else None
        return cls(frozenset(exact), pattern, wildcard_all)

    def allows(self, origin: str) -> bool:
        origin = origin.lower()
        return self.any or origin in self.exact or (self.pattern is not None and self.pattern.match(origin) is not None)


def _wildcard(entry: str) -> str:
    """A trailing ``:*`` is any port (digits only); another ``*`` is any run of characters but ``/``."""
    port = entry.endswith(":*")
    body = entry[:-2] if port else entry
    regex = "[^/]*".join(re.escape(part) for part in body.split("*"))
    return regex + (":[0-9]{1,5}" if port else "")


def guard_middleware(config: ServerConfig, methods: Iterable[str]) -> Middleware:
    """The guard for ``config``, its rules compiled now: a bad entry fails at start-up, not on a request."""
    return Middleware(
        BrowserGuardMiddleware,
        hosts=HostRules.build(config.allowed_hosts, config.host),
        origins=OriginRules.build(config.allowed_origins),
        methods=methods,
    )


def _header_list(value: bytes) -> list[str]:
    return [part.strip().lower() for part in value.decode("latin-1").split(",") if part.strip()]


class BrowserGuardMiddleware:
    """The Host check, then the Origin check; CORS headers on what an allowed origin gets."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        hosts: HostRules,
        origins: OriginRules,
        methods: Iterable[str] = ("GET", "HEAD", "POST", "DELETE"),
    ) -> None:
        self.app = app
        self.hosts = hosts
        self.origins = origins
        #: Host header values already accepted by the static rules (bounded: names come from clients)
        self._hosts_ok: set[bytes] = set()
        self._arrived_ok: set[tuple[bytes, str]] = set()
        self._origins_ok: set[bytes] = set()
        self._warned: set[str] = set()
        self._methods = ", ".join(sorted({m.upper() for m in methods} | {"OPTIONS"})).encode()
        self._exposed = EXPOSED_HEADERS.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = origin = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
            elif name == b"origin":
                origin = value
        if host is not None and host not in self._hosts_ok and not self.hosts.any and not self._check_host(host, scope):
            name = host.decode("latin-1")[:100]
            await self._refuse(
                scope,
                send,
                "host_not_allowed",
                f"Host {name!r} is not allowed (DNS-rebinding "
                "protection); if you reach autotune by this name, add it to [server] allowed_hosts "
                f"or AUTOTUNE_ALLOWED_HOSTS (e.g. AUTOTUNE_ALLOWED_HOSTS={_bare_host(name)})",
            )
            return
        if origin is None:
            await self.app(scope, receive, send)
            return
        await self._cross_origin(scope, receive, send, host, origin)

    def _check_host(self, host: bytes, scope: Scope) -> bool:
        server = scope.get("server")
        if server and (host, server[0]) in self._arrived_ok:
            return True
        name = _bare_host(host.decode("latin-1"))
        if self.hosts.allows(name):
            if len(self._hosts_ok) < _CACHE_LIMIT:
                self._hosts_ok.add(host)
            return True
        if not server or name != _bare_host(str(server[0])):
            return False
        if len(self._arrived_ok) < _CACHE_LIMIT:  # only with this address: another interface may differ
            self._arrived_ok.add((host, server[0]))
        return True

    def _origin_allowed(self, origin: bytes, host: bytes | None) -> bool:
        if origin in self._origins_ok:
            return True
        text = origin.decode("latin-1")
        if self.origins.allows(text):
            if len(self._origins_ok) < _CACHE_LIMIT:
                self._origins_ok.add(origin)
            return True
        # same origin (a page autotune itself served, under a Host that passed the check above); not when
        # allowed_hosts is '*', where the Host proves nothing
        if host is not None and not self.hosts.any:
            bare = host.decode("latin-1").lower()
            return text.lower() in (f"http://{bare}", f"https://{bare}")
        return False

    async def _cross_origin(
        self, scope: Scope, receive: Receive, send: Send, host: bytes | None, origin: bytes
    ) -> None:
        if not self._origin_allowed(origin, host):
            text = origin.decode("latin-1")[:200]
            await self._refuse(
                scope,
                send,
                "origin_not_allowed",
                f"Origin {text!r} is not allowed to use this "
                "server; to let this web page in, add it to [server] allowed_origins or "
                f"AUTOTUNE_ORIGINS (e.g. AUTOTUNE_ORIGINS={text})",
            )
            return
        cors = [(b"access-control-allow-origin", origin), (b"vary", b"Origin")]
        if scope["method"] == "OPTIONS":
            request_method = request_headers = private_network = None
            for name, value in scope["headers"]:
                if name == b"access-control-request-method":
                    request_method = value
                elif name == b"access-control-request-headers":
                    request_headers = value
                elif name == b"access-control-request-private-network":
                    private_network = value
            if request_method is not None:
                await self._preflight(send, cors, request_headers, private_network)
                return
        cors.append((b"access-control-expose-headers", self._exposed))

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *cors]
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(
        self, send: Send, cors: list[tuple[bytes, bytes]], request_headers: bytes | None, private_network: bytes | None
    ) -> None:
        """204 with what may follow; requested headers outside the list are left out, so the browser refuses."""
        allowed = [*ALLOWED_HEADERS]
        for name in _header_list(request_headers or b""):
            if name.startswith("x-stainless-") and name not in allowed:  # the OpenAI SDK adds new ones over time
                allowed.append(name)
        headers = [
            *cors[:1],
            (b"vary", b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
            (b"access-control-allow-methods", self._methods),
            (b"access-control-allow-headers", ", ".join(allowed).encode()),
            (b"access-control-max-age", PREFLIGHT_MAX_AGE.encode()),
            (b"content-length", b"0"),
        ]
        if private_network is not None and private_network.lower() == b"true":
            headers.append((b"access-control-allow-private-network", b"true"))  # Chrome's Private Network Access
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async def _refuse(self, scope: Scope, send: Send, code: str, message: str) -> None:
        path: str = scope["path"]
        if len(self._warned) < 64 and code + message not in self._warned:
            self._warned.add(code + message)
            log.warning("refused %s %s: %s", scope["method"], path[:100], message)
        error = Forbidden(message, code=code)
        body = dumps(error_body(door_for_path(path), error))
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in error_headers(error).items()]
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
