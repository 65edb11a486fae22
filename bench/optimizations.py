"""Benchmark: the default optimization stack versus all ten optimization plugins disabled.

Runs on the embedded Gemma 3 270M (llamacpp backend) through ``autotune_core.pipeline.Pipeline``:

  (a) 20 short single-turn chats, (b) one 10-turn conversation with a ~300-token system prompt,
  (c) one ~1,500-token document prompt.

Both arms live in one process, each with its own host and its own loaded model; items are interleaved
(the arm that goes first alternates) and both arms get the same warm-up request first. Reported: KV bytes
(as llama.cpp allocated them), TTFT, reloads, wall time, and whether the text is identical at temperature 0.
Planning cost of the whole default stack is measured separately against the in-process FakeBackend.

    python bench/optimizations.py            # print the results
    python bench/optimizations.py --write    # and replace the "Optimizations" section of docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autotune_core.config import PluginsConfig, Settings
from autotune_core.host import PluginHost
from autotune_core.messages import ChatRequest, Message
from autotune_core.pipeline import Pipeline
from autotune_core.proof.scenarios import SHORT_PROMPTS
from autotune_core.testing import LLAMA_1B, FakeBackendPlugin, make_hardware

OPTIMIZATIONS = [
    "ctx-buckets",
    "ctx-sizing",
    "flash-attention",
    "keep-alive",
    "kv-precision",
    "live-pressure",
    "model-fit",
    "noswap-guard",
    "prefill-batch",
    "prefix-protect",
]
#: stateful plugins outside this benchmark's scope, held off in both arms so prompts stay identical
HELD_OFF = ["recall", "context-compressor", "os-tuner", "session-advisor"]
MODEL = "gemma3:270m"
MAX_TOKENS = 24

SYSTEM = (
    "You are a careful, friendly assistant for a small hardware shop. Answer in one or two short "
    "sentences, use plain words, never invent prices, and say so when you do not know. "
) * 7
#: the short chats `autotune proof` uses, and two more (one list for both, so the two measure the same prompts)
SHORT = [*SHORT_PROMPTS, "How many hours are in a day?", "What gas do plants take in?"]
TURNS = [
    "Hi! Do you sell screwdrivers?",
    "Which kind is best for small electronics?",
    "Do I need a magnetic tip?",
    "What about a torque screwdriver?",
    "Can you recommend a soldering iron?",
    "What temperature should I use for lead-free solder?",
    "Do I need a fume extractor?",
    "What flux do you suggest?",
    "How do I clean the tip?",
    "Thanks, anything else I should buy?",
]
DOC_PARAGRAPH = (
    "The regional water board met on Tuesday to review the summer plan. Reservoir levels stand at "
    "seventy-two percent, below the ten-year average, and the board agreed to ask households to "
    "water gardens only in the evening. Two pumping stations will be serviced in July, and a new "
    "leak-detection contract starts in August. "
)


@dataclass
class Arm:
    name: str
    host: PluginHost
    pipeline: Pipeline
    ttft: dict[str, list[float]] = field(default_factory=dict)
    wall: dict[str, float] = field(default_factory=dict)
    kv: dict[str, list[int]] = field(default_factory=dict)
    reloads: dict[str, int] = field(default_factory=dict)
    texts: dict[str, list[str]] = field(default_factory=dict)
    kv_types: dict[str, list[str]] = field(default_factory=dict)
    num_ctx: dict[str, list[int]] = field(default_factory=dict)
    reloads_after_first: int = 0


def make_arm(name: str, disabled: list[str], data_dir: str) -> Arm:
    env = {**os.environ, "AUTOTUNE_DATA_DIR": data_dir, "AUTOTUNE_CONFIG": str(Path(data_dir) / "none.toml")}
    env.pop("AUTOTUNE_DISABLE_PLUGINS", None)
    env.pop("AUTOTUNE_LOAD_PLUGINS", None)
    config = Settings(backend="llamacpp", plugins=PluginsConfig(disabled=disabled))
    host = PluginHost(config=config, env=env)
    return Arm(name=name, host=host, pipeline=Pipeline(host))


def document_prompt() -> str:
    return "\n\n".join(f"Section {i + 1}. {DOC_PARAGRAPH}" for i in range(24))


async def one(arm: Arm, scenario: str, messages: list[Message]) -> str:
    request = ChatRequest(model=MODEL, messages=messages, max_tokens=MAX_TOKENS, temperature=0.0, seed=1)
    started = time.perf_counter()
    prepared = await arm.pipeline.prepare(request)
    backend: Any = prepared.backend
    reloads_before = backend.engine.reloads
    text: list[str] = []
    first: float | None = None
    async for chunk in arm.pipeline.stream(prepared):
        if chunk.content and first is None:
            first = (time.perf_counter() - started) * 1000
        text.append(chunk.content)
    arm.wall[scenario] = arm.wall.get(scenario, 0.0) + (time.perf_counter() - started)
    arm.ttft.setdefault(scenario, []).append(first or float("nan"))
    loaded = backend.engine.loaded
    arm.kv.setdefault(scenario, []).append(int(loaded.kv_bytes_measured or 0) if loaded else 0)
    arm.kv_types.setdefault(scenario, []).append(loaded.params.kv_type if loaded else "?")
    arm.num_ctx.setdefault(scenario, []).append(loaded.params.n_ctx if loaded else 0)
    arm.reloads[scenario] = arm.reloads.get(scenario, 0) + backend.engine.reloads - reloads_before
    answer = "".join(text)
    arm.texts.setdefault(scenario, []).append(answer)
    return answer


async def run_embedded() -> tuple[Arm, Arm]:
    tuned = make_arm("tuned", HELD_OFF, tempfile.mkdtemp(prefix="at-bench-a-"))
    plain = make_arm("plain", HELD_OFF + OPTIMIZATIONS, tempfile.mkdtemp(prefix="at-bench-b-"))
    arms = (tuned, plain)
    for arm in arms:  # warm both alike: model load, tokenizer, first-token code paths
        await one(arm, "warmup", [Message(role="user", content="Warm-up: say OK.")])
    for index, question in enumerate(SHORT):
        for arm in arms if index % 2 == 0 else arms[::-1]:
            await one(arm, "a", [Message(role="user", content=question)])
    histories: dict[str, list[Message]] = {arm.name: [Message(role="system", content=SYSTEM)] for arm in arms}
    for index, question in enumerate(TURNS):
        for arm in arms if index % 2 == 0 else arms[::-1]:
            history = histories[arm.name]
            history.append(Message(role="user", content=question))
            reloads = arm.reloads.get("b", 0)
            answer = await one(arm, "b", list(history))
            if index > 0:
                arm.reloads_after_first += arm.reloads["b"] - reloads
            history.append(Message(role="assistant", content=answer))
    doc = document_prompt() + "\n\nSummarise the notes above in one sentence."
    for arm in arms:
        await one(arm, "c", [Message(role="user", content=doc)])
    for arm in arms:
        await arm.host.stop()
    return tuned, plain


def planning_cost(rounds: int = 2000) -> dict[str, float]:
    """p50/p90 ms of Pipeline.plan (all hooks, folds, reconcile) against the FakeBackend."""
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = {"AUTOTUNE_DATA_DIR": tmp, "AUTOTUNE_CONFIG": str(Path(tmp) / "none.toml")}
        stacks = {
            "default stack (all entry points)": [],
            "ten optimizations + core only": [
                n
                for n in (
                    "recall",
                    "context-compressor",
                    "os-tuner",
                    "session-advisor",
                    "auto-tune",
                    "archetype-profiles",
                    "max-context-cap",
                )
            ],
        }
        for label, disabled in stacks.items():
            host = PluginHost(
                config=Settings(backend="fake", plugins=PluginsConfig(disabled=disabled)),
                plugins=[FakeBackendPlugin()],
                env=env,
                hardware=make_hardware(),
            )
            pipeline = Pipeline(host)
            backend = host.backend("fake")
            # the system prompt repeats (as in any conversation); the user message is new every round
            requests = [
                ChatRequest(
                    model=LLAMA_1B.name,
                    max_tokens=64,
                    messages=[
                        Message(role="system", content=SYSTEM),
                        Message(role="user", content=f"How do I clean the tip of iron number {i} before storing it?"),
                    ],
                )
                for i in range(rounds)
            ]

            async def loop(
                pipeline: Pipeline = pipeline, backend: Any = backend, requests: list[ChatRequest] = requests
            ) -> list[float]:
                times = []
                for request in requests:
                    started = time.perf_counter()
                    await pipeline.plan(request, backend, LLAMA_1B)
                    times.append((time.perf_counter() - started) * 1000)
                return times

            times = asyncio.run(loop())[rounds // 10 :]
            times.sort()
            out[f"{label} p50"] = statistics.median(times)
            out[f"{label} p90"] = times[int(len(times) * 0.9)]
            out[f"{label} plugins"] = float(sum(1 for r in host.records.values() if r.enabled))
    return out


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values):.0f}" if values else "—"


def report(tuned: Arm, plain: Arm, plan_cost: dict[str, float]) -> str:
    lines = [
        "## Optimizations",
        "",
        "The default stack against the same host with the ten optimization plugins disabled "
        "(ctx-sizing, ctx-buckets, kv-precision, live-pressure, noswap-guard, model-fit, prefix-protect, "
        "keep-alive, flash-attention, prefill-batch), on the embedded Gemma 3 270M through the pipeline, "
        f"streaming, temperature 0, max_tokens {MAX_TOKENS}. recall, context-compressor, os-tuner and "
        "session-advisor are off in both arms (they change prompts or the process; measured elsewhere). "
        "Items are interleaved and both arms get the same warm-up request. KV bytes are what llama.cpp "
        "reported allocating for the loaded context. Reproduce with:",
        "",
        "```bash",
        "python bench/optimizations.py --write",
        "```",
        "",
        f"{platform.python_implementation()} {platform.python_version()} on {platform.system()} "
        f"{platform.machine()}, {os.cpu_count()} CPUs.",
        "",
        "| scenario | arm | num_ctx | KV type | KV bytes (median) | TTFT ms (median) | reloads | wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    names = {"a": "(a) 20 short chats", "b": "(b) 10-turn conversation", "c": "(c) ~1,500-token document"}
    for key, label in names.items():
        for arm in (tuned, plain):
            kv = statistics.median(arm.kv[key])
            ctxs = sorted(set(arm.num_ctx[key]))
            kv_types = "/".join(sorted(set(arm.kv_types[key])))
            lines.append(
                f"| {label} | {arm.name} | {'/'.join(map(str, ctxs))} | {kv_types}"
                f" | {kv / 2**20:.1f} MiB | {_ms(arm.ttft[key])} | {arm.reloads[key]} | "
                f"{arm.wall[key]:.2f} |"
            )
    lines.append("")
    summary = []
    for key, label in names.items():
        kv_t, kv_p = statistics.median(tuned.kv[key]), statistics.median(plain.kv[key])
        same_kv = set(tuned.kv_types[key]) == set(plain.kv_types[key])
        identical = sum(a == b for a, b in zip(tuned.texts[key], plain.texts[key], strict=False))
        summary.append(
            f"- {label}: KV {100 * (1 - kv_t / kv_p):.0f} % lower; TTFT {_ms(tuned.ttft[key])} vs "
            f"{_ms(plain.ttft[key])} ms; output identical in {identical}/{len(tuned.texts[key])} "
            f"({'same' if same_kv else 'different'} KV type)"
        )
    summary.append(
        f"- reloads after the first turn of (b): tuned {tuned.reloads_after_first}, "
        f"plain {plain.reloads_after_first} (target: 0)"
    )
    lines += [
        *summary,
        "",
        "Planning cost per request (Pipeline.plan: every hook, both folds, reconcile; "
        "FakeBackend, a repeated system prompt and a new user message each round, "
        "2,000 rounds after 10 % warm-up):",
        "",
        "| stack | plugins loaded | p50 ms | p90 ms |",
        "|---|---|---|---|",
    ]
    for label in ("default stack (all entry points)", "ten optimizations + core only"):
        lines.append(
            f"| {label} | {plan_cost[f'{label} plugins']:.0f} | {plan_cost[f'{label} p50']:.3f} | "
            f"{plan_cost[f'{label} p90']:.3f} |"
        )
    lines.append("")
    return "\n".join(lines)


def write_section(text: str, path: Path = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md") -> None:
    """Replace (or append) the "## Optimizations" section, leaving other sections alone."""
    current = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    start = current.find("\n## Optimizations\n")
    if start == -1:
        updated = current.rstrip("\n") + "\n\n" + text
    else:
        end = current.find("\n## ", start + 1)
        updated = current[: start + 1] + text + (current[end:] if end != -1 else "")
    path.write_text(updated.rstrip("\n") + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--json", action="store_true", help="also print raw numbers as JSON")
    args = parser.parse_args()
    plan_cost = planning_cost()
    tuned, plain = asyncio.run(run_embedded())
    text = report(tuned, plain, plan_cost)
    print(text)
    if args.json:
        print(
            json.dumps(
                {
                    arm.name: {
                        "kv": arm.kv,
                        "ttft": arm.ttft,
                        "reloads": arm.reloads,
                        "wall": arm.wall,
                        "num_ctx": arm.num_ctx,
                        "texts": arm.texts,
                    }
                    for arm in (tuned, plain)
                },
                indent=1,
            ),
            file=sys.stderr,
        )
    if args.write:
        write_section(text)


if __name__ == "__main__":
    main()
