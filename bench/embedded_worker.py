"""What the worker process costs: per-token streaming lag and TTFT, in-process thread vs worker, side by side.

Both arms run the same ``Runner`` (the worker's engine code) on the embedded Gemma 3 270M, warm, with the same
prompts, alternating round by round so machine noise hits both alike:

- ``in-process``: the Runner on a thread in this process, tokens handed to the event loop with
  ``call_soon_threadsafe`` (exactly the old in-process backend's bridge);
- ``worker``: ``LlamaCppBackend.stream_chat`` (socketpair, frames, the supervisor, StreamChunks).

Lag is the time from the engine producing a token (``perf_counter`` in the producing thread or process;
CLOCK_MONOTONIC, shared across processes on Linux) to the consumer coroutine holding it. TTFT is from the
call to the first token in hand; each round's prompt is new, so each TTFT includes a real prefill.
``--rss`` measures resident memory of this process (the server) and of the worker around an unload, and the
same for an in-process ``Llama`` closed in place.

Run: ``python bench/embedded_worker.py --rounds 40 --tokens 32 [--threads 1]`` and
``python bench/embedded_worker.py --rss``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import threading
import time
from dataclasses import asdict
from typing import Any

from autotune_core.messages import ChatRequest, Message, StreamChunk
from autotune_core.plan import Plan
from autotune_plugins.backends.llamacpp import LlamaCppBackend, gemma_path
from autotune_plugins.backends.llamacpp.engine import LoadParams, physical_cores
from autotune_plugins.backends.llamacpp.protocol import Frame
from autotune_plugins.backends.llamacpp.runner import Runner
from autotune_plugins.backends.llamacpp.supervisor import Supervisor, WorkerProcess

MODEL = "gemma3-270m"
N_CTX = 1024


def prompt(round_no: int) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"Request {round_no}: write a short list of colours, one per line."}]


class ThreadArm:
    """The old in-process path: the engine on a thread, tokens bridged with call_soon_threadsafe."""

    def __init__(self, tokens: int, threads: int) -> None:
        self.runner = Runner(n_threads=threads, verbose=False, chat_template=None)
        self.params = LoadParams(path=gemma_path(), n_ctx=N_CTX)
        self.tokens = tokens

    async def run(self, round_no: int) -> tuple[float, list[float]]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any, float]] = asyncio.Queue()

        class Emit:
            def event(self, message: dict[str, Any]) -> None:
                if message["ev"] in ("done", "error", "cancelled"):
                    loop.call_soon_threadsafe(queue.put_nowait, ("end", message, 0.0))

            def token(self, request_id: int, text: str) -> None:
                loop.call_soon_threadsafe(queue.put_nowait, ("token", text, time.perf_counter()))

        message = {
            "id": round_no,
            "params": asdict(self.params),
            "alias": MODEL,
            "messages": prompt(round_no),
            "kwargs": {"max_tokens": self.tokens, "temperature": 0.0},
        }
        started = time.perf_counter()
        thread = threading.Thread(target=self.runner.generate, args=(message, Emit(), threading.Event()))
        thread.start()
        lags: list[float] = []
        ttft = 0.0
        while True:
            kind, item, produced = await queue.get()
            if kind == "end":
                break
            chunk = StreamChunk(content=item)
            now = time.perf_counter()
            if not lags:
                ttft = now - started
            lags.append(now - produced)
            del chunk
        thread.join()
        return ttft, lags


class TimedSupervisor(Supervisor):
    """Notes when each token was produced (the frame carries it) for the consumer to compare with."""

    produced: list[float]

    def _on_frame(self, worker: WorkerProcess, frame: Frame) -> None:
        if frame[0] == "token":
            self.produced.append(frame[1][1])
        super()._on_frame(worker, frame)


class WorkerArm:
    def __init__(self, tokens: int, threads: int) -> None:
        self.backend = LlamaCppBackend({"n_ctx": N_CTX, "keep_alive": -1, "n_threads": threads})
        old = self.backend.engine
        self.engine = TimedSupervisor(old.config, cancel_grace=10.0, max_crashes=5, crash_backoff=1.0)
        self.engine.produced = []
        self.backend.engine = self.engine
        self.tokens = tokens

    async def run(self, round_no: int) -> tuple[float, list[float]]:
        request = ChatRequest(
            model=MODEL, messages=[Message(**m) for m in prompt(round_no)], max_tokens=self.tokens, temperature=0
        )
        self.engine.produced = []
        received: list[float] = []
        started = time.perf_counter()
        async for chunk in self.backend.stream_chat(request, Plan(model=MODEL, num_ctx=N_CTX)):
            if chunk.content:
                received.append(time.perf_counter())
        lags = [r - p for r, p in zip(received, self.engine.produced, strict=False)]
        return received[0] - started, lags


def _ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def latency(rounds: int, tokens: int, threads: int) -> None:
    thread_arm, worker_arm = ThreadArm(tokens, threads), WorkerArm(tokens, threads)
    await thread_arm.run(-1)
    await worker_arm.run(-1)  # both warm: model loaded, first decode done
    results: dict[str, tuple[list[float], list[float]]] = {"in-process": ([], []), "worker": ([], [])}
    for round_no in range(rounds):
        arms = (("in-process", thread_arm), ("worker", worker_arm))
        for name, arm in arms if round_no % 2 == 0 else arms[::-1]:
            ttft, lags = await arm.run(round_no)  # type: ignore[attr-defined]
            results[name][0].append(ttft)
            results[name][1].extend(lags)
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"{rounds} rounds x {tokens} tokens, Gemma 3 270M, n_ctx {N_CTX}, {threads} engine thread(s), "
        f"{os.cpu_count()} CPUs, load average {load}"
    )
    print(
        f"{'arm':<11} {'lag p50 ms':>10} {'lag p90 ms':>10} {'lag p99 ms':>10} {'TTFT p50 ms':>11} "
        f"{'TTFT mean ms':>12} {'tokens':>7}"
    )
    for name, (ttfts, lags) in results.items():
        print(
            f"{name:<11} {_ms(lags, 0.5):>10.3f} {_ms(lags, 0.9):>10.3f} {_ms(lags, 0.99):>10.3f} "
            f"{_ms(ttfts, 0.5):>11.1f} {statistics.mean(ttfts) * 1000:>12.1f} {len(lags):>7}"
        )
    (t_ttft, t_lags), (w_ttft, w_lags) = results["in-process"], results["worker"]
    print(
        f"added by the process boundary: lag p50 {(_ms(w_lags, 0.5) - _ms(t_lags, 0.5)):+.3f} ms, "
        f"TTFT p50 {(statistics.median(w_ttft) / statistics.median(t_ttft) - 1) * 100:+.1f} %, "
        f"TTFT mean {(statistics.mean(w_ttft) / statistics.mean(t_ttft) - 1) * 100:+.1f} %"
    )
    await worker_arm.backend.aclose()
    thread_arm.runner.close()


def _rss(pid: int | None = None) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


async def rss() -> None:
    request = ChatRequest(model=MODEL, messages=[Message(role="user", content="Hi")], max_tokens=4, temperature=0)
    gemma_path()
    gc.collect()
    print(f"server process at start: {_rss():.0f} MiB")
    backend = LlamaCppBackend({"n_ctx": 4096, "keep_alive": -1})
    await backend.chat(request, Plan(model=MODEL, num_ctx=4096))
    pid = backend.engine.pid
    assert pid is not None
    print(f"worker: loaded, n_ctx 4096: server {_rss():.0f} MiB, worker {_rss(pid):.0f} MiB")
    await backend.unload(MODEL)
    gc.collect()
    print(f"worker: after unload: server {_rss():.0f} MiB, worker gone: {backend.engine.pid is None}")
    runner = Runner(n_threads=physical_cores(), verbose=False, chat_template=None)
    with runner.engine.lock:
        runner.engine.ensure(LoadParams(path=gemma_path(), n_ctx=4096), MODEL)
    print(f"in-process: loaded, n_ctx 4096: server {_rss():.0f} MiB")
    runner.close()
    gc.collect()
    print(f"in-process: after Llama.close(): server {_rss():.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=physical_cores(), help="llama.cpp threads per arm")
    parser.add_argument("--rss", action="store_true", help="memory around an unload instead of latency")
    args = parser.parse_args()
    asyncio.run(rss() if args.rss else latency(args.rounds, args.tokens, args.threads))


if __name__ == "__main__":
    main()
