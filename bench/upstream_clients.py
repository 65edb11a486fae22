"""Upstream HTTP clients side by side: why the backends call the model server with their own client.

Starts the toy Ollama-compatible upstream of ``proxy_overhead.py`` and, in one process on uvloop (the proxy's
loop), sends the same non-streaming ``/api/chat`` through each client: p50 latency at concurrency 1,
requests/s at concurrency 32 and the client's own CPU per call (this process's CPU time during the c=32
round; the upstream runs in another process), every client with a keep-alive pool of 64. The backends make
one such call per proxied request. autotune's client (``autotune_plugins/backends/_http.py``) and aiohttp
alternate for ``--rounds`` rounds; httpx and httpcore, an order of magnitude slower, run once.

Run: ``python bench/upstream_clients.py`` (add ``--seconds 1 --rounds 1`` for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpcore
import httpx

sys.path.insert(0, str(Path(__file__).parent))
from proxy_overhead import MODEL, free_port, wait_healthy

BODY = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}], "stream": False}).encode()
HEADERS = {"content-type": "application/json"}


async def p50_ms(call: Callable[[], Awaitable[None]], n: int) -> float:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return times[len(times) // 2]


async def rate(call: Callable[[], Awaitable[None]], concurrency: int, seconds: float) -> tuple[float, float]:
    """Calls per second and CPU milliseconds per call."""
    deadline = time.perf_counter() + seconds
    done = 0
    cpu = time.process_time()

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await call()
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - started), (time.process_time() - cpu) * 1000 / max(done, 1)


async def run(port: int, seconds: float, n: int, rounds: int) -> None:
    from autotune_plugins.backends._http import UpstreamClient

    url = f"http://127.0.0.1:{port}/api/chat"
    hx = httpx.AsyncClient(limits=httpx.Limits(max_connections=64, max_keepalive_connections=64), trust_env=False)
    pool = httpcore.AsyncConnectionPool(max_connections=64)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
    ours = UpstreamClient(f"http://127.0.0.1:{port}", 30.0, limit=64)
    payload = json.loads(BODY)

    async def with_httpx() -> None:
        (await hx.post(url, content=BODY, headers=HEADERS)).json()

    async def with_httpcore() -> None:
        response = await pool.request(
            "POST", url, content=BODY, headers=[(b"host", b"127.0.0.1"), (b"content-type", b"application/json")]
        )
        json.loads(response.content)

    async def with_aiohttp() -> None:
        async with session.post(url, data=BODY, headers=HEADERS) as response:
            json.loads(await response.read())

    async def with_autotune() -> None:
        (await ours.request("POST", "/api/chat", json=payload)).json()

    arms = [("httpx", with_httpx), ("httpcore", with_httpcore)]
    arms += [("aiohttp", with_aiohttp), ("autotune", with_autotune)] * rounds
    print(f"{'client':<12}{'p50 ms c=1':>12}{'req/s c=32':>12}{'CPU ms/call':>13}")
    results: dict[str, list[tuple[float, float, float]]] = {}
    try:
        for name, call in arms:
            await p50_ms(call, 100)  # warm the pool
            p50 = await p50_ms(call, n)
            per_s, cpu = await rate(call, 32, seconds)
            results.setdefault(name, []).append((p50, per_s, cpu))
            print(f"{name:<12}{p50:>12.3f}{per_s:>12.0f}{cpu:>13.3f}")
    finally:
        await hx.aclose()
        await pool.aclose()
        await session.close()
        await ours.aclose()
    best = {
        name: [min(column) if i != 1 else max(column) for i, column in enumerate(zip(*rows, strict=True))]
        for name, rows in results.items()
    }
    a, b = best["autotune"], best["aiohttp"]
    print(
        f"autotune / aiohttp (best of {rounds}): p50 {a[0] / b[0]:.2f}x, req/s {a[1] / b[1]:.2f}x, "
        f"CPU per call {a[2] / b[2]:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per throughput round")
    parser.add_argument("--requests", type=int, default=1000, help="sequential requests for the p50")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of aiohttp and autotune's client")
    args = parser.parse_args()
    port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "proxy_overhead.py"), "--upstream", str(port)]
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}/api/version", 10)
        import uvloop

        uvloop.run(run(port, args.seconds, args.requests, args.rounds))
    finally:
        upstream.terminate()
        upstream.wait(timeout=10)


if __name__ == "__main__":
    main()
