"""Per-request cost of the Host/Origin guard (server/guard.py), in isolation: the middleware around a do-nothing
ASGI app versus that app called directly, with the headers the OpenAI SDK sends. Target: the common case (no
``Origin``, loopback ``Host``) adds well under 1 µs; the proxy's whole overhead budget is in milliseconds.

    python bench/guard_overhead.py [-n 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from autotune_core.config import ServerConfig
from autotune_core.server.guard import BrowserGuardMiddleware, HostRules, OriginRules

SDK_HEADERS = [
    (b"host", b"127.0.0.1:8765"),
    (b"accept-encoding", b"gzip, deflate"),
    (b"connection", b"keep-alive"),
    (b"accept", b"application/json"),
    (b"content-type", b"application/json"),
    (b"user-agent", b"OpenAI/Python 1.99.0"),
    (b"x-stainless-lang", b"python"),
    (b"x-stainless-package-version", b"1.99.0"),
    (b"x-stainless-os", b"Linux"),
    (b"x-stainless-arch", b"x64"),
    (b"x-stainless-runtime", b"CPython"),
    (b"x-stainless-runtime-version", b"3.11.2"),
    (b"authorization", b"Bearer autotune"),
    (b"x-stainless-async", b"false"),
    (b"x-stainless-retry-count", b"0"),
    (b"x-stainless-read-timeout", b"600"),
    (b"content-length", b"87"),
]


async def noop(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})


async def send(message: Any) -> None:
    return None


async def receive() -> Any:
    return {"type": "http.request", "body": b""}


async def per_call_ns(app: Any, headers: list[tuple[bytes, bytes]], n: int) -> float:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": headers,
        "server": ("127.0.0.1", 8765),
    }
    start = time.perf_counter_ns()
    for _ in range(n):
        await app(scope, receive, send)
    return (time.perf_counter_ns() - start) / n


async def main(n: int, rounds: int) -> None:
    config = ServerConfig()
    guard = BrowserGuardMiddleware(
        noop,
        hosts=HostRules.build(config.allowed_hosts, config.host),
        origins=OriginRules.build(config.allowed_origins),
    )
    cases = {
        "no Origin (SDK)": SDK_HEADERS,
        "allowed Origin": [*SDK_HEADERS, (b"origin", b"http://localhost:3000")],
        "refused Origin": [*SDK_HEADERS, (b"origin", b"http://evil.example")],
        "refused Host": [(b"host", b"attacker.example:8765"), *SDK_HEADERS[1:]],
    }
    bare = [await per_call_ns(noop, SDK_HEADERS, n) for _ in range(rounds)]
    print(f"{'case':<18} {'ns/request':>11} {'added ns':>9}   (median of {rounds} rounds x {n:,} calls)")
    print(f"{'bare app':<18} {statistics.median(bare):>11.0f} {'-':>9}")
    for label, headers in cases.items():
        times = [await per_call_ns(guard, headers, n) for _ in range(rounds)]
        added = statistics.median(times) - statistics.median(bare)
        print(f"{label:<18} {statistics.median(times):>11.0f} {added:>9.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    import logging

    logging.disable(logging.WARNING)  # the refused cases would log their first refusal
    asyncio.run(main(args.n, args.rounds))
