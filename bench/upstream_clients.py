"""Upstream HTTP clients side by side: why the backends call the model server with aiohttp.

Starts the toy Ollama-compatible upstream of ``proxy_overhead.py`` and, in one process, sends the same
non-streaming ``/api/chat`` through each client: p50 latency at concurrency 1 and requests/s at concurrency
32, every client with a keep-alive pool of 64. The backends make one such call per proxied request.

Run: ``python bench/upstream_clients.py`` (add ``--seconds 1`` for a smoke run).
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


async def rate(call: Callable[[], Awaitable[None]], concurrency: int, seconds: float) -> float:
    deadline = time.perf_counter() + seconds
    done = 0

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await call()
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - started)


async def run(port: int, seconds: float, n: int) -> None:
    url = f"http://127.0.0.1:{port}/api/chat"
    hx = httpx.AsyncClient(limits=httpx.Limits(max_connections=64, max_keepalive_connections=64), trust_env=False)
    pool = httpcore.AsyncConnectionPool(max_connections=64)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))

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

    print(f"{'client':<12}{'p50 ms c=1':>12}{'req/s c=32':>12}")
    try:
        for name, call in (("httpx", with_httpx), ("httpcore", with_httpcore), ("aiohttp", with_aiohttp)):
            await p50_ms(call, 100)  # warm the pool
            print(f"{name:<12}{await p50_ms(call, n):>12.3f}{await rate(call, 32, seconds):>12.0f}")
    finally:
        await hx.aclose()
        await pool.aclose()
        await session.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per throughput round")
    parser.add_argument("--requests", type=int, default=1000, help="sequential requests for the p50")
    args = parser.parse_args()
    port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "proxy_overhead.py"), "--upstream", str(port)]
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}/api/version", 10)
        asyncio.run(run(port, args.seconds, args.requests))
    finally:
        upstream.terminate()
        upstream.wait(timeout=10)


if __name__ == "__main__":
    main()
