"""Runs the proof: every scenario, arms interleaved per item (ABAB, rotating who goes first), warmed alike.

Warm-up rules (the same for every arm):
- each arm gets one generic request first (model load, first-token code paths);
- before a scenario each arm gets the scenario's warm-up item: same shape, other text, so the model is
  loaded at that arm's settings but the prefix cache holds nothing of the prompt about to be timed;
- when the arms share one model server (Ollama, llama-server...), that warm-up precedes *every* item,
  because the other arm has just run on the same server with its own settings (a reload the user would
  never see); reloads are counted only in timed requests.
"""

from __future__ import annotations

import asyncio
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from ..messages import Message
from .arms import Arm, ArmSet, PipelineArm, Sample, build_arms
from .scenarios import Item, Scenario, Step, agent, conversation, document, short_chats
from .sysmon import PeakSampler, has_worker, server_pids, swap_counters, worker_pid


class Progress(Protocol):
    def total(self, steps: int) -> None: ...
    def step(self, text: str, advance: int = 1) -> None: ...


class _Silent:
    def total(self, steps: int) -> None:
        pass

    def step(self, text: str, advance: int = 1) -> None:
        pass


@dataclass
class ProofConfig:
    model: str | None = None
    backend: str | None = None
    quick: bool = False
    #: pairs per scenario (None: 6 in a full run, 2–3 in a quick one)
    runs: int | None = None
    direct: bool = True
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    #: scenario names to run (None: all four)
    only: list[str] | None = None


@dataclass
class Record:
    scenario: str
    item: str
    step: int
    arm: str
    position: int
    sample: Sample
    #: 1-minute load average when the request started (other processes on the machine make timings noise)
    load: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["sample"].pop("text", None)
        data["sample"]["text_chars"] = len(self.sample.text)
        return data


@dataclass
class ArmTotals:
    name: str
    label: str
    backend: str
    pids_how: str = ""
    peak_rss: int | None = None
    swap_in: int = 0
    swap_out: int = 0
    rss_shared: bool = False
    wall_s: dict[str, float] = field(default_factory=dict)


@dataclass
class ProofResult:
    model: str
    backend: str
    quick: bool
    runs: int
    default_ctx: int | None
    shared_server: bool
    scenarios: list[Scenario]
    records: list[Record]
    arms: dict[str, ArmTotals]
    info: dict[str, Any]
    notes: list[str]
    started_at: float
    wall_s: float = 0.0
    #: CPU seconds of this process and its (reaped) children: with the load average, how busy the machine was
    cpu_s: float = 0.0
    load_average: tuple[float, float] = (0.0, 0.0)
    texts: dict[tuple[str, str, int, str], str] = field(default_factory=dict)

    def samples(self, scenario: str, arm: str) -> list[Record]:
        return [r for r in self.records if r.scenario == scenario and r.arm == arm]


def plan_scenarios(cfg: ProofConfig, default_ctx: int, embedded: bool) -> list[Scenario]:
    """The scenarios at this run's size: quick keeps each to a couple of pairs and short answers."""
    n = cfg.runs or (2 if cfg.quick else 6)
    tokens = 8 if cfg.quick else 24
    reps = 1 if cfg.quick and cfg.runs is None else n
    # the document goes last: autotune keeps a model's context sticky (growing it never shrinks it, so no
    # reload), and a large document first would size every later scenario's context
    out = [
        short_chats(max(n, 3) if cfg.quick else max(n, 12), tokens),
        conversation(reps, 4 if cfg.quick else 10, tokens),
        agent(reps, 3 if cfg.quick else 4, tokens),
        document(reps, default_ctx, tokens),
    ]
    if cfg.quick and embedded:
        doc = out[3]
        doc.items, doc.skipped = (
            [],
            (
                f"skipped in --quick on the embedded engine: a prompt over its {default_ctx}-"
                "token default context takes longer to prefill on a CPU than the quick "
                "run's budget; the full run measures it"
            ),
        )
    if cfg.only is not None:
        for scenario in out:
            if scenario.name not in cfg.only:
                scenario.items, scenario.skipped = [], "not selected"
    return out


def _order(arms: list[Arm], index: int) -> list[Arm]:
    shift = index % len(arms)
    return arms[shift:] + arms[:shift]


async def _warm(arm: Arm, item: Item, max_tokens: int) -> None:
    """Untimed. Scenario warm-ups ask for the scenario's max_tokens, so the context is sized as for the items."""
    for step in item.steps:
        await arm.send(step, max_tokens)


def _cpu_seconds() -> float:
    try:
        import resource
    except ImportError:  # Windows
        return time.process_time()
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _load() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return 0.0


async def run_proof(cfg: ProofConfig, progress: Progress | None = None) -> ProofResult:
    started = time.time()
    t0 = time.perf_counter()
    cpu0, load0 = _cpu_seconds(), _load()
    armset: ArmSet = await build_arms(cfg.model, cfg.backend, cfg.env, direct=cfg.direct)
    arms = armset.arms
    report: Progress = progress or _Silent()
    sampler = PeakSampler()
    sampler.start()
    records: list[Record] = []
    totals = {arm.name: ArmTotals(arm.name, arm.label, arm.backend_name) for arm in arms}
    texts: dict[tuple[str, str, int, str], str] = {}
    try:
        generic = Item("warm", [Step([Message(role="user", content="Warm-up: reply with one word.")])])
        # untimed and alike: both engines load at once (on a CPU the loads overlap with each other's I/O)
        report.step("warming up " + ", ".join(arm.name for arm in arms), 0)
        await asyncio.gather(*(_warm(arm, generic, 1) for arm in arms))
        plain = next(a for a in arms if a.name == "plain")
        default_ctx = await plain.default_context() or 4096
        pids = _pids(arms, totals)
        scenarios = plan_scenarios(cfg, default_ctx, embedded=not armset.shared_server)
        report.total(sum(len(item.steps) for s in scenarios for item in s.items) * len(arms))
        for scenario in scenarios:
            if not scenario.items:
                continue
            if not armset.shared_server:
                for arm in arms:
                    report.step(f"{scenario.name}: warming up {arm.name}", 0)
                    await _warm(arm, scenario.warmup, scenario.max_tokens)
            for index, item in enumerate(scenario.items):
                for position, arm in enumerate(_order(arms, index)):
                    if armset.shared_server:
                        report.step(f"{scenario.name}: warming up {arm.name}", 0)
                        await _warm(arm, scenario.warmup, scenario.max_tokens)
                    sampler.watch(arm.name, pids[arm.name], _finder(arm))
                    try:
                        await _time_item(arm, position, scenario, item, report, records, texts, totals[arm.name])
                    finally:
                        sampler.watch(None, [])
    finally:
        sampler.stop()
        await armset.close()
    for name, peak in sampler.peaks.items():
        totals[name].peak_rss = peak
    info = armset.info.model_dump() if armset.info is not None else {}
    runs = cfg.runs or (2 if cfg.quick else 6)
    notes = list(armset.notes)
    if armset.shared_server:
        notes.append(
            "arms share one model server: each item is preceded by that arm's warm-up (same shape, "
            "other text), so the arm switch's reload is never timed"
        )
    result = ProofResult(
        model=armset.model,
        backend=armset.backend,
        quick=cfg.quick,
        runs=runs,
        default_ctx=default_ctx,
        shared_server=armset.shared_server,
        scenarios=scenarios,
        records=records,
        arms=totals,
        info=info,
        notes=notes,
        started_at=started,
        texts=texts,
    )
    result.wall_s = time.perf_counter() - t0
    result.cpu_s = _cpu_seconds() - cpu0
    result.load_average = (load0, _load())
    return result


async def _time_item(
    arm: Arm,
    position: int,
    scenario: Scenario,
    item: Item,
    report: Progress,
    records: list[Record],
    texts: dict[tuple[str, str, int, str], str],
    totals: ArmTotals,
) -> None:
    """One item (all its steps) on one arm: each answer recorded, and the arm's wall time and swap counted."""
    swap_in, swap_out = swap_counters()
    began = time.perf_counter()
    for step in item.steps:
        load = _load()
        sample = await arm.send(step, scenario.max_tokens)
        records.append(Record(scenario.name, item.key, step.index, arm.name, position, sample, load))
        texts[(scenario.name, item.key, step.index, arm.name)] = sample.text
        report.step(f"{scenario.name} · {arm.name} · {item.key}")
    after_in, after_out = swap_counters()
    totals.swap_in += max(0, after_in - swap_in)
    totals.swap_out += max(0, after_out - swap_out)
    totals.wall_s[scenario.name] = totals.wall_s.get(scenario.name, 0.0) + time.perf_counter() - began


def _finder(arm: Arm) -> Callable[[], list[int]] | None:
    """For an arm with its own embedded worker: find it at each sample (it starts, ends and restarts)."""
    backend = getattr(arm, "backend", None)
    if backend is None or not has_worker(backend):
        return None
    return lambda: [pid] if (pid := worker_pid(backend)) else []


def _pids(arms: list[Arm], totals: dict[str, ArmTotals]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    plain_backend = None
    for arm in arms:
        if isinstance(arm, PipelineArm):
            found, how = server_pids(arm.backend)
            if arm.name == "plain":
                plain_backend = (found, how)
        else:
            found, how = plain_backend if plain_backend is not None else ([], "unknown")
        out[arm.name] = found
        totals[arm.name].pids_how = how
    seen: dict[int, str] = {}
    for name, pids in out.items():
        for pid in pids:
            if pid in seen and seen[pid] != name:
                totals[name].rss_shared = totals[seen[pid]].rss_shared = True
            seen.setdefault(pid, name)
    return out


def machine() -> dict[str, Any]:
    import psutil

    return {
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.machine()}",
        "cpus": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
    }
