"""Slot-aware admission against a simulated batching server: how many requests autotune should let through.

The upstream (this script, ``--upstream``) behaves like llama-server's continuous batching: ``--slots``
slots, a decode step every ``--step-ms`` that advances every running request by one token, a request that
arrives waiting in the server's FIFO queue until a slot is free *at the start of a step*, ``--tokens``
tokens per answer. Its ``/props`` reports ``total_slots``, so autotune (``openai`` backend, default stack)
learns the slots. Unlike the real model it costs no CPU, so the comparison holds on a busy machine.

Arms, alternating round by round at 8 concurrent clients (as ``proxy_llama_server.py``): direct; autotune
with the slot-aware limit (slots + lookahead); autotune with ``max_concurrent`` fixed at the slots (one
request per slot, the behaviour before) and at twice the slots. Run: ``python bench/admission_sim.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections import deque
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from proxy_overhead import Conn, _response, _throughput, free_port, wait_healthy

MODEL = "sim-model"


class Batcher:
    """Continuous batching: ``slots`` sequences advance one token per step; joiners wait for a step start."""

    def __init__(self, slots: int, step_s: float, tokens: int) -> None:
        self.slots, self.step_s, self.tokens = slots, step_s, tokens
        self.waiting: deque[asyncio.Future[None]] = deque()
        self.running: list[list[Any]] = []  # [tokens left, future]
        self.wake = asyncio.Event()

    async def generate(self) -> None:
        done = asyncio.get_running_loop().create_future()
        self.waiting.append(done)
        self.wake.set()
        await done

    async def loop(self) -> None:
        while True:
            if not self.running and not self.waiting:
                self.wake.clear()
                await self.wake.wait()
            while self.waiting and len(self.running) < self.slots:  # join only at a step boundary
                self.running.append([self.tokens, self.waiting.popleft()])
            await asyncio.sleep(self.step_s)
            for seq in self.running:
                seq[0] -= 1
            for seq in [s for s in self.running if s[0] <= 0]:
                self.running.remove(seq)
                if not seq[1].done():
                    seq[1].set_result(None)


def run_upstream(port: int, slots: int, step_s: float, tokens: int) -> None:
    async def main() -> None:
        batcher = Batcher(slots, step_s, tokens)
        asyncio.get_running_loop().create_task(batcher.loop())
        props = json.dumps(
            {"default_generation_settings": {"n_ctx": 4096}, "total_slots": slots, "build_info": "sim"}
        ).encode()
        models = json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]}).encode()
        answer = json.dumps(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": MODEL,
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "length",
                        "message": {"role": "assistant", "content": "red " * tokens},
                    }
                ],
                "usage": {"prompt_tokens": 12, "completion_tokens": tokens, "total_tokens": 12 + tokens},
            }
        ).encode()

        async def conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    lines = head.split(b"\r\n")
                    path = lines[0].split(b" ")[1].split(b"?")[0]
                    length = next((int(x[15:]) for x in lines[1:] if x[:15].lower() == b"content-length:"), 0)
                    if length:
                        await reader.readexactly(length)
                    if path == b"/v1/chat/completions":
                        await batcher.generate()
                        writer.write(_response(200, answer))
                    elif path == b"/props":
                        writer.write(_response(200, props))
                    elif path == b"/v1/models":
                        writer.write(_response(200, models))
                    elif path in (b"/health", b"/v1/health"):
                        writer.write(_response(200, b'{"status":"ok"}'))
                    else:
                        writer.write(_response(404, b'{"error":{"code":404,"message":"File Not Found"}}'))
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(conn, "127.0.0.1", port, backlog=256)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--step-ms", type=float, default=25.0)
    parser.add_argument("--tokens", type=int, default=10)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--fixed", default="", help="comma-separated fixed limits to compare (default: the slots and twice the slots)"
    )
    args = parser.parse_args()
    if args.upstream:
        run_upstream(args.upstream, args.slots, args.step_ms / 1000, args.tokens)
        return
    home = Path(tempfile.mkdtemp(prefix="autotune-sim-"))
    atexit.register(shutil.rmtree, home, True)  # the scratch home goes with the run
    up = free_port()
    fixed_limits = [int(n) for n in args.fixed.split(",") if n.strip()] or [args.slots, 2 * args.slots]
    arms: dict[str, str | None] = {"slot-aware": None, **{f"fixed {n}": str(n) for n in fixed_limits}}
    ports = {arm: free_port() for arm in arms}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--upstream",
                str(up),
                "--slots",
                str(args.slots),
                "--step-ms",
                str(args.step_ms),
                "--tokens",
                str(args.tokens),
            ]
        )
    ]
    try:
        wait_healthy(f"http://127.0.0.1:{up}/health", 10)
        for arm, fixed in arms.items():
            env = {
                **os.environ,
                "AUTOTUNE_CONFIG": str(home / "config.toml"),
                "AUTOTUNE_DATA_DIR": str(home / f"data-{ports[arm]}"),
                "AUTOTUNE_BACKEND": "openai",
                "AUTOTUNE_OPENAI_URL": f"http://127.0.0.1:{up}",
                "AUTOTUNE_MAX_QUEUED": "64",
            }
            env.pop("AUTOTUNE_MAX_CONCURRENT", None)
            if fixed:
                env["AUTOTUNE_MAX_CONCURRENT"] = fixed
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "autotune_core.server", "--port", str(ports[arm]), "--log-level", "warning"],
                    env=env,
                    stderr=subprocess.DEVNULL,
                )
            )
        limits = {}
        for arm, port in ports.items():
            wait_healthy(f"http://127.0.0.1:{port}/health", 30)
            with Conn(port) as probe:
                limits[arm] = json.loads(probe.get("/health"))["queue"]["limit"]
        body = json.dumps(
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": "Name a colour."}],
                "max_tokens": args.tokens,
                "temperature": 0,
            }
        ).encode()
        every = {"direct": up, **ports}
        rates: dict[str, list[float]] = {arm: [] for arm in every}
        for port in every.values():  # warm-up
            asyncio.run(_throughput(port, b"/v1/chat/completions", body, args.clients, 1.0))
        for _ in range(args.rounds):
            for arm, port in every.items():
                rate, failed = asyncio.run(_throughput(port, b"/v1/chat/completions", body, args.clients, args.seconds))
                rates[arm].append(rate)
                if failed:
                    print(f"  {arm}: {failed} failed", flush=True)
    finally:
        for process in procs:
            process.terminate()
            process.wait(timeout=10)
    ideal = args.slots / (args.tokens * args.step_ms / 1000)
    print(
        f"simulated batching server: {args.slots} slots, a step every {args.step_ms:g} ms, {args.tokens} tokens "
        f"per answer (ideal {ideal:.1f} req/s); {args.clients} clients, {args.rounds} × {args.seconds:g} s per arm"
    )
    print(f"{'arm':<16}{'in flight':>10}{'req/s':>9}{'% direct':>10}  rounds")
    direct = statistics.mean(rates["direct"])
    for arm, values in rates.items():
        rate = statistics.mean(values)
        limit = "—" if arm == "direct" else str(limits[arm])
        print(f"{arm:<16}{limit:>10}{rate:>9.2f}{rate / direct:>10.0%}  " + "/".join(f"{v:.1f}" for v in values))


if __name__ == "__main__":
    main()
