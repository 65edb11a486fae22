"""The best-known Python proxy in the same run: LiteLLM's proxy, the do-nothing pass-through and autotune, in
front of the same upstream as ``proxy_overhead.py``, measured side by side.

LiteLLM is installed (pinned, ``LITELLM_VERSION``) into its own virtual environment under
``~/.cache/autotune-bench/`` on first use; it is never a dependency of autotune. Processes on loopback:

- the upstream: ``proxy_overhead.py``'s minimal Ollama-compatible server (``/api/chat``, ~0.03 ms an answer;
  a ``bench-10ms:latest`` model answers after 10 ms);
- the do-nothing pass-through (uvicorn + httptools + uvloop + aiohttp forwarding the body): the floor;
- autotune (``python -m autotune_core.server``, every installed plugin, the Ollama backend), asked at its
  OpenAI door (``/v1/chat/completions``, as LiteLLM is) and at its Ollama door;
- LiteLLM's proxy (``litellm --config``, one worker, model ``ollama_chat/bench:latest`` on the upstream),
  asked at ``/v1/chat/completions``.

Measured: c=1 non-streaming latency, every arm in turn in one loop (p50/p99, added = arm − direct);
throughput with 32 concurrent keep-alive clients, arms alternating, two rounds each, against the instant
upstream and the 10 ms one; each proxy's CPU time per request during the instant rounds (``/proc``).
The client is ``proxy_overhead.py``'s minimal HTTP/1.1 client in every arm.

Run: ``python bench/peers.py`` (``--quick`` for a smoke run; ``--venv DIR`` to use another environment).
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
from proxy_overhead import MODEL, Conn, _throughput, chat_body, cpu_seconds, free_port, pct, timed_model, wait_healthy

LITELLM_VERSION = "1.100.5"  # newer releases need litellm-proxy, which the registry here lacks
OVERHEAD = Path(__file__).with_name("proxy_overhead.py")
#: arm -> (path, request shape): what each arm is asked, identical for every request of a run
ARMS: dict[str, tuple[str, str]] = {
    "direct": ("/api/chat", "ollama"),
    "pass-through": ("/api/chat", "ollama"),
    "autotune (OpenAI door)": ("/v1/chat/completions", "openai"),
    "autotune (Ollama door)": ("/api/chat", "ollama"),
    "LiteLLM": ("/v1/chat/completions", "openai"),
}


def litellm_env(venv: Path) -> Path:
    """The venv's ``litellm`` executable, installing the pinned version first if needed."""
    exe = venv / "bin" / "litellm"
    marker = venv / f".litellm-{LITELLM_VERSION}"
    if exe.is_file() and marker.is_file():
        return exe
    print(f"installing litellm[proxy]=={LITELLM_VERSION} into {venv} (once) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"], check=True)
    marker.touch()
    return exe


def start_litellm(exe: Path, upstream_port: int, port: int, home: Path) -> subprocess.Popen[bytes]:
    config = home / "litellm.yaml"
    models = "".join(
        f"  - model_name: {name}\n    litellm_params:\n      model: ollama_chat/{name}\n"
        f"      api_base: http://127.0.0.1:{upstream_port}\n"
        for name in (MODEL, timed_model(10))
    )
    config.write_text(f"model_list:\n{models}litellm_settings:\n  telemetry: false\n  drop_params: true\n")
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
        "DISABLE_ADMIN_UI": "True",
        "NO_DOCS": "True",
    }
    env.pop("DATABASE_URL", None)
    return subprocess.Popen(
        [str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
        env=env,
        cwd=home,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (smoke run)")
    parser.add_argument("--requests", type=int, default=500, help="c=1 rounds (every arm once per round)")
    parser.add_argument("--seconds", type=float, default=3.0, help="per throughput round")
    parser.add_argument(
        "--venv", type=Path, default=Path.home() / ".cache" / "autotune-bench" / f"litellm-{LITELLM_VERSION}"
    )
    args = parser.parse_args()
    if args.quick:
        args.requests, args.seconds = 100, 1.0
    exe = litellm_env(args.venv)
    version = subprocess.run(
        [str(args.venv / "bin" / "python"), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    home = Path(tempfile.mkdtemp(prefix="autotune-peers-"))
    atexit.register(shutil.rmtree, home, True)  # the scratch home goes with the run
    ports = {"direct": free_port(), "pass-through": free_port(), "autotune": free_port(), "LiteLLM": free_port()}
    env = {
        **os.environ,
        "AUTOTUNE_CONFIG": str(home / "config.toml"),
        "AUTOTUNE_DATA_DIR": str(home / "data"),
        "AUTOTUNE_OLLAMA_URL": f"http://127.0.0.1:{ports['direct']}",
        "AUTOTUNE_MAX_CONCURRENT": "64",
        "AUTOTUNE_MAX_QUEUED": "64",
        "AUTOTUNE_BACKEND": "ollama",
    }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(subprocess.Popen([sys.executable, str(OVERHEAD), "--upstream", str(ports["direct"])]))
        wait_healthy(f"http://127.0.0.1:{ports['direct']}/api/version", 10)
        procs.append(
            subprocess.Popen(
                [sys.executable, str(OVERHEAD), "--passthrough", str(ports["direct"]), str(ports["pass-through"])]
            )
        )
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "autotune_core.server",
                    "--port",
                    str(ports["autotune"]),
                    "--log-level",
                    "warning",
                ],
                env=env,
                stderr=(home / "autotune.log").open("wb"),
            )
        )
        procs.append(start_litellm(exe, ports["direct"], ports["LiteLLM"], home))
        wait_healthy(f"http://127.0.0.1:{ports['pass-through']}/api/version", 10)
        wait_healthy(f"http://127.0.0.1:{ports['autotune']}/health", 30)
        wait_healthy(f"http://127.0.0.1:{ports['LiteLLM']}/health/liveliness", 120)
        pids = {"autotune": procs[2].pid, "LiteLLM": procs[3].pid, "pass-through": procs[1].pid}
        results = measure(args, ports, pids)
        report(args, version, results)
    finally:
        for process in reversed(procs):
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def port_of(arm: str, ports: dict[str, int]) -> int:
    return ports["autotune"] if arm.startswith("autotune") else ports[arm]


def measure(args: argparse.Namespace, ports: dict[str, int], pids: dict[str, int]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {arm: {} for arm in ARMS}
    conns = {arm: Conn(port_of(arm, ports)) for arm in ARMS}
    bodies = {arm: chat_body(False, shape) for arm, (_, shape) in ARMS.items()}
    for _ in range(30):  # warm-up: model lists and info, first plans, LiteLLM's router
        for arm, (path, _) in ARMS.items():
            headers, answer = conns[arm].post(path, bodies[arm])
            assert headers[b":status"] == b"200", (arm, answer[:300])
    times: dict[str, list[float]] = {arm: [] for arm in ARMS}
    for _ in range(args.requests):  # one loop, every arm in turn: all see the same machine
        for arm, (path, _) in ARMS.items():
            started = time.perf_counter()
            conns[arm].post(path, bodies[arm])
            times[arm].append((time.perf_counter() - started) * 1000)
    for conn in conns.values():
        conn.close()
    for arm in ARMS:
        out[arm]["p50"], out[arm]["p99"] = pct(times[arm], 0.5), pct(times[arm], 0.99)
    throughput_arms = ("direct", "pass-through", "autotune (OpenAI door)", "LiteLLM")
    for label, model in (("instant", MODEL), ("10ms", timed_model(10))):
        rates: dict[str, list[float]] = {arm: [] for arm in throughput_arms}
        cpu: dict[str, list[float]] = {arm: [] for arm in throughput_arms}
        for _ in range(2):
            for arm in throughput_arms:
                path, shape = ARMS[arm]
                body = json.loads(chat_body(False, shape))
                body["model"] = model
                pid = pids.get(arm.split(" (")[0])
                before = cpu_seconds(pid) if pid else 0.0
                started = time.perf_counter()
                rate, failed = asyncio.run(
                    _throughput(port_of(arm, ports), path.encode(), json.dumps(body).encode(), 32, args.seconds)
                )
                if failed:
                    print(f"  {arm}: {failed} failed requests in a {label} round", flush=True)
                rates[arm].append(rate)
                if pid and label == "instant":
                    served = max(1, round(rate * (time.perf_counter() - started)))
                    cpu[arm].append((cpu_seconds(pid) - before) * 1000 / served)
        for arm in throughput_arms:
            out[arm][f"rps_{label}"] = statistics.mean(rates[arm])
            if cpu[arm]:
                out[arm]["cpu_ms"] = statistics.mean(cpu[arm])
    return out


def report(args: argparse.Namespace, version: str, r: dict[str, dict[str, float]]) -> None:
    d = r["direct"]
    print(
        f"\nPeers on loopback: {args.requests} interleaved c=1 rounds, throughput 32 clients × 2 × "
        f"{args.seconds:g} s per arm; LiteLLM {version}"
    )
    print(
        f"{'arm':<24}{'p50 ms':>8}{'p99 ms':>8}{'+p50':>7}{'+p99':>7}{'c=32 req/s':>12}{'% direct':>9}"
        f"{'10ms req/s':>11}{'% direct':>9}{'CPU ms/req':>11}"
    )
    for arm, v in r.items():
        rps = v.get("rps_instant")
        rps10 = v.get("rps_10ms")
        print(
            f"{arm:<24}{v['p50']:>8.2f}{v['p99']:>8.2f}{v['p50'] - d['p50']:>7.2f}{v['p99'] - d['p99']:>7.2f}"
            + (f"{rps:>12,.0f}{rps / d['rps_instant']:>9.0%}" if rps else f"{'':>21}")
            + (f"{rps10:>11,.0f}{rps10 / d['rps_10ms']:>9.0%}" if rps10 else f"{'':>20}")
            + (f"{v['cpu_ms']:>11.2f}" if "cpu_ms" in v else "")
        )
    at, lite, bare = r["autotune (OpenAI door)"], r["LiteLLM"], r["pass-through"]
    print(
        "\nratios (LiteLLM ÷ autotune's OpenAI door): "
        f"added p50 {(lite['p50'] - d['p50']) / (at['p50'] - d['p50']):.1f}×, "
        f"added p99 {(lite['p99'] - d['p99']) / (at['p99'] - d['p99']):.1f}×, "
        f"c=32 throughput {lite['rps_instant'] / at['rps_instant']:.2f}× (10 ms upstream "
        f"{lite['rps_10ms'] / at['rps_10ms']:.2f}×), CPU per request {lite['cpu_ms'] / at['cpu_ms']:.1f}×"
    )
    print(
        f"autotune ÷ pass-through: added p50 {(at['p50'] - d['p50']) / (bare['p50'] - d['p50']):.1f}×, "
        f"c=32 throughput {at['rps_instant'] / bare['rps_instant']:.2f}×"
    )


if __name__ == "__main__":
    main()
