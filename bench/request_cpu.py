"""autotune's own CPU per request, without the network: the real ASGI app and plugin stack, the upstream call
answered in-process, so only parsing, planning, translating and the response are timed.

What ``proxy_overhead.py`` cannot separate: there, a request's CPU also holds uvicorn's and aiohttp's socket work
and the VM's cold-cache effects. Here the same request runs thousands of times in one process (CPU time of the
process; the minimum over rounds, since this VM's speed drifts by ±20 % over minutes).

    python bench/request_cpu.py                     # default stack, OpenAI door
    python bench/request_cpu.py --door ollama --minimal-stack
    PYTHONPATH=/path/to/other/checkout python bench/request_cpu.py   # run from outside the checkout: A/B
    python bench/request_cpu.py --instructions      # instructions per request under valgrind (deterministic)

CPU time on this VM drifts by ±10 % even for two copies of the same code run at the same moment on its two
cores, which hides a change of a few per cent. ``--instructions`` counts the machine instructions the
measured requests execute instead (valgrind's callgrind, instrumentation switched on only around them,
``PYTHONHASHSEED=0``): the same code gives the same count to 0.01 %, so an A/B of a small cut is exact. It
needs ``valgrind`` (``apt install valgrind``) and takes ~15 s; it is a count, not a time (a cache miss costs
more than an add), so confirm a real cut with the timed rounds or ``proxy_overhead.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import proxy_overhead as po

_FINAL = {
    "model": po.MODEL,
    "created_at": "2026-01-01T00:00:00Z",
    "message": {"role": "assistant", "content": "Hello there"},
    **po._FINAL,
}
_CANNED = {"/api/chat": _FINAL, "/api/show": po._SHOW, "/api/tags": po._TAGS, "/api/version": {"version": "0.30.1"}}


async def _canned(self: Any, method: str, path: str, model: str | None = None, **kwargs: Any) -> Any:
    return dict(_CANNED.get(path, {"models": []}))


def _scope(path: str, body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:11435"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 5555),
        "server": ("127.0.0.1", 11435),
        "state": {},
    }


async def one(app: Any, path: str, body: bytes) -> None:
    delivered = False
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)  # the client never hangs up
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(_scope(path, body), receive, send)
    assert statuses == [200], statuses


async def measure(args: argparse.Namespace) -> list[float]:
    from autotune_core.server import create_app
    from autotune_plugins.backends import ollama

    ollama.OllamaBackend._request = _canned  # type: ignore[method-assign]
    path = "/v1/chat/completions" if args.door == "openai" else "/api/chat"
    body = po.chat_body(False, args.door)
    app = create_app(sampler=False)
    async with app.router.lifespan_context(app):
        for _ in range(300):  # warm-up: model info, caches
            await one(app, path, body)
        if args.callgrind:  # inside valgrind (see --instructions): count only the measured requests
            _callgrind("on")
            for _ in range(args.requests):
                await one(app, path, body)
            _callgrind("off")
            return []
        rounds = []
        for _ in range(args.rounds):
            started = time.process_time()
            for _ in range(args.requests):
                await one(app, path, body)
            rounds.append((time.process_time() - started) * 1e6 / args.requests)
    return rounds


def _callgrind(state: str) -> None:
    subprocess.run(["callgrind_control", "--instr=" + state, str(os.getpid())], capture_output=True, check=True)


def count_instructions(args: argparse.Namespace) -> float:
    """This script again under callgrind, instrumented only around ``--requests`` requests: instructions per
    request (in thousands)."""
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind on PATH (apt install valgrind)")
    with tempfile.TemporaryDirectory(prefix="autotune-callgrind-") as scratch:
        command = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={scratch}/callgrind.out",
            sys.executable,
            __file__,
            "--callgrind",
            "--door",
            args.door,
            "--requests",
            str(args.requests),
            *(["--minimal-stack"] if args.minimal_stack else []),
        ]
        done = subprocess.run(
            command, env={**os.environ, "PYTHONHASHSEED": "0"}, capture_output=True, text=True, check=False
        )
    found = re.findall(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or not found:
        raise SystemExit(f"callgrind run failed ({done.returncode}): {done.stderr[-800:]}")
    return int(found[-1]) / args.requests / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--door", choices=("openai", "ollama"), default="openai")
    parser.add_argument("--requests", type=int, default=2000, help="per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--minimal-stack", action="store_true", help="only the core and the Ollama backend")
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions per request under valgrind instead"
    )
    parser.add_argument("--callgrind", action="store_true", help=argparse.SUPPRESS)  # the run inside valgrind
    args = parser.parse_args()
    if args.instructions:
        if "--requests" not in sys.argv:
            args.requests = 300  # ~50x slower under valgrind; the count is exact anyway
        import autotune_core

        stack = "core + ollama backend" if args.minimal_stack else "default stack"
        print(
            f"{Path(autotune_core.__file__).parent.parent}: {stack}, {args.door} door: "
            f"{count_instructions(args):.1f} k instructions per request (callgrind, {args.requests} requests)"
        )
        return
    home = Path(tempfile.mkdtemp(prefix="autotune-bench-"))
    atexit.register(shutil.rmtree, home, True)  # the scratch home goes with the run
    os.environ.update(
        {
            "AUTOTUNE_CONFIG": str(home / "config.toml"),
            "AUTOTUNE_DATA_DIR": str(home / "data"),
            "AUTOTUNE_OLLAMA_URL": "http://127.0.0.1:9",  # never called: the answers are canned
            "AUTOTUNE_MAX_CONCURRENT": "64",
            "AUTOTUNE_BACKEND": "ollama",
        }
    )
    if args.minimal_stack:
        os.environ["AUTOTUNE_LOAD_PLUGINS"] = "ollama"
    import autotune_core

    try:
        import uvloop

        rounds = uvloop.run(measure(args))
    except ImportError:
        rounds = asyncio.run(measure(args))
    if args.callgrind:
        return
    rounds.sort()
    stack = "core + ollama backend" if args.minimal_stack else "default stack"
    print(
        f"{Path(autotune_core.__file__).parent.parent}: {stack}, {args.door} door: "
        f"{rounds[0]:.1f} us CPU per request (min of {args.rounds} x {args.requests}; "
        f"median {rounds[len(rounds) // 2]:.1f})"
    )


if __name__ == "__main__":
    main()
