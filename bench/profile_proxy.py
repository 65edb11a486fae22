"""Where the proxy's time goes per request: a py-spy profile of ``python -m autotune_core.server`` (default
plugin stack, Ollama backend) under ``proxy_overhead.py``'s fast upstream, grouped so it can be acted on.

The client sends non-streaming chats in a loop (``--door openai|ollama``, ``--concurrency`` keep-alive
connections) while ``py-spy record --format raw --gil`` samples the server's thread that holds the GIL (its
Python work; ``--all-time`` also samples it waiting in system calls and the idle loop). Printed: the
share of samples per layer (uvicorn/httptools, starlette, the door and flow, the pipeline and plugin hooks,
the upstream client, pydantic, json, asyncio, ...), then the functions with the most self time and the
most inclusive time (autotune's own code). Sampling adds little overhead; shares are what matter, not absolute times.

Needs py-spy on PATH or ``--py-spy PATH`` (``pip install py-spy`` in any environment; it is a standalone
binary and never a dependency of autotune). Run: ``python bench/profile_proxy.py`` (root or ptrace rights).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from proxy_overhead import _throughput, chat_body, free_port, wait_healthy

OVERHEAD = Path(__file__).with_name("proxy_overhead.py")
#: (label, substring of a frame's file): the first that matches a sample's innermost interesting frame wins
LAYERS: tuple[tuple[str, str], ...] = (
    ("json (stdlib)", "/json/"),
    ("pydantic", "pydantic"),
    ("aiohttp (the bench's pass-through; autotune before 2026-12-03)", "aiohttp"),
    ("upstream client (backends/_http.py)", "autotune_plugins/backends/_http.py"),
    ("Ollama backend", "autotune_plugins/backends/ollama.py"),
    ("backends: shared", "autotune_plugins/backends/_common.py"),
    ("plugins (hooks)", "autotune_plugins/"),
    ("pluggy (hook dispatch)", "pluggy"),
    ("core: host", "autotune_core/host.py"),
    ("core: pipeline", "autotune_core/pipeline.py"),
    ("core: plan/trace", "autotune_core/plan.py"),
    ("core: tokens", "autotune_core/tokens.py"),
    ("server: doors and wire", "autotune_core/server/o"),
    ("server: flow", "autotune_core/server/flow.py"),
    ("server: queue", "autotune_core/server/queue.py"),
    ("server: other", "autotune_core/server/"),
    ("core: other", "autotune_core/"),
    ("starlette", "starlette"),
    ("uvicorn + httptools", "uvicorn"),
    ("asyncio / uvloop", "asyncio"),
)


def layer_of(stack: list[str]) -> str:
    """The layer of the innermost frame that belongs to a known layer (stdlib helpers count for their caller)."""
    for frame in reversed(stack):
        for label, needle in LAYERS:
            if needle in frame:
                return label
    return "other (C code, idle loop)"


def parse(raw: str) -> tuple[collections.Counter[str], collections.Counter[str], collections.Counter[str], int]:
    """py-spy raw lines ``frame;frame;... count`` → (layers, self time per function, inclusive per function)."""
    layers: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stacks, _, count = line.rpartition(" ")
        if not stacks or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stacks.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += n
        layers[layer_of(frames)] += n
        own[frames[-1]] += n
        for frame in set(frames):
            if "autotune" in frame or "/plugins/" in frame:
                inclusive[frame] += n
    return layers, own, inclusive, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--door", choices=("openai", "ollama"), default="openai")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy")
    parser.add_argument("--minimal-stack", action="store_true", help="only the core and the Ollama backend")
    parser.add_argument(
        "--all-time",
        action="store_true",
        help="sample waiting threads too (default: only the thread holding the GIL, i.e. Python work)",
    )
    args = parser.parse_args()
    up_port, proxy_port = free_port(), free_port()
    home = Path(tempfile.mkdtemp(prefix="autotune-profile-"))
    atexit.register(shutil.rmtree, home, True)  # the scratch home goes with the run
    env = {
        **os.environ,
        "AUTOTUNE_CONFIG": str(home / "config.toml"),
        "AUTOTUNE_DATA_DIR": str(home / "data"),
        "AUTOTUNE_OLLAMA_URL": f"http://127.0.0.1:{up_port}",
        "AUTOTUNE_MAX_CONCURRENT": "64",
        "AUTOTUNE_MAX_QUEUED": "64",
        "AUTOTUNE_BACKEND": "ollama",
    }
    if args.minimal_stack:
        env["AUTOTUNE_LOAD_PLUGINS"] = "ollama"
    upstream = subprocess.Popen([sys.executable, str(OVERHEAD), "--upstream", str(up_port)])
    proxy = None
    try:
        wait_healthy(f"http://127.0.0.1:{up_port}/api/version", 10)
        proxy = subprocess.Popen(
            [sys.executable, "-m", "autotune_core.server", "--port", str(proxy_port), "--log-level", "warning"],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        wait_healthy(f"http://127.0.0.1:{proxy_port}/health", 30)
        path = b"/v1/chat/completions" if args.door == "openai" else b"/api/chat"
        body = chat_body(False, args.door)
        asyncio.run(_throughput(proxy_port, path, body, args.concurrency, 2.0))  # warm-up
        raw = home / "profile.txt"
        spy = subprocess.Popen(
            [
                args.py_spy,
                "record",
                "--pid",
                str(proxy.pid),
                "--format",
                "raw",
                "--rate",
                str(args.rate),
                "--duration",
                str(int(args.seconds)),
                "--output",
                str(raw),
                "--nonblocking",
                *([] if args.all_time else ["--gil"]),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(0.5)
        rate, failed = asyncio.run(_throughput(proxy_port, path, body, args.concurrency, args.seconds))
        _, err = spy.communicate(timeout=args.seconds + 30)
        if not raw.is_file():
            raise SystemExit(f"py-spy wrote nothing: {err.decode()[-500:]}")
        layers, own, inclusive, total = parse(raw.read_text())
    finally:
        for process in (proxy, upstream):
            if process is not None:
                process.terminate()
                process.wait(timeout=10)
    print(
        f"{args.door} door, {args.concurrency} client(s), {rate:,.0f} req/s ({failed} failed), {total} samples "
        f"at {args.rate}/s over {args.seconds:g} s ({'minimal' if args.minimal_stack else 'default'} stack)"
    )
    print("\nshare of samples by layer (innermost known frame)")
    for label, n in layers.most_common():
        print(f"  {100 * n / total:5.1f} %  {label}")
    print(f"\ntop {args.top} functions by self time")
    for frame, n in own.most_common(args.top):
        print(f"  {100 * n / total:5.1f} %  {frame}")
    print(f"\ntop {args.top} autotune functions by inclusive time")
    for frame, n in inclusive.most_common(args.top):
        print(f"  {100 * n / total:5.1f} %  {frame}")


if __name__ == "__main__":
    main()
