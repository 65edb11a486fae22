"""os-tuner: exact restore after 100 concurrent requests (some cancelled, some failing), reference
counting, reports, backstops and toggle. Governor files live in a temp sysfs; QoS is a fake."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from autotune_core import ChatRequest, Message, PluginHost
from autotune_core.pipeline import Pipeline
from autotune_core.pytest_plugin import make_host
from autotune_core.testing import LLAMA_1B, FakeBackend
from autotune_plugins.os_tuner import OSTunerPlugin, TunerState, process_state

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread niceness checks are Linux's")


class FakeQoS:
    def __init__(self) -> None:
        self.value = (0x11, 0)  # utility: not the default, so a reset to DEFAULT would be caught
        self.threads: list[int] = []

    def get(self) -> tuple[int, int]:
        return self.value

    def set(self, qos: int, relpri: int) -> None:
        self.threads.append(threading.get_ident())
        self.value = (qos, relpri)


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    for cpu, governor in enumerate(["powersave", "powersave", "schedutil", "performance"]):
        folder = tmp_path / f"cpu{cpu}" / "cpufreq"
        folder.mkdir(parents=True)
        (folder / "scaling_governor").write_text(governor + "\n")
        (folder / "scaling_available_governors").write_text("performance powersave schedutil\n")
    return tmp_path


@pytest.fixture
def server_proc() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def thread_nices(pid: int) -> dict[int, int]:
    return {t.id: os.getpriority(os.PRIO_PROCESS, t.id) for t in psutil.Process(pid).threads()}


def snapshot(sysfs: Path, qos: FakeQoS, server: int) -> dict[str, Any]:
    return {
        "nice": set(thread_nices(os.getpid()).values()),
        "server": thread_nices(server),
        "gc": (gc.get_threshold(), gc.get_freeze_count(), gc.isenabled()),
        "qos": qos.value,
        "governors": {p.parent.parent.name: p.read_text() for p in sorted(sysfs.glob("cpu*/cpufreq/scaling_governor"))},
    }


@pytest.fixture(autouse=True)
def _untuned_start() -> None:
    """Hosts of earlier tests may still be lingering (tuned for up to 2 s after their last request): these
    tests compare against the untuned process, so end that linger first."""
    process_state().restore_all()


def make(
    sysfs: Path,
    server: int,
    *,
    root: bool = True,
    settings: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    entrypoints: bool = False,
) -> tuple[PluginHost, OSTunerPlugin, FakeQoS]:
    """The shipped host (make_host) with an os-tuner on a fake sysfs, QoS and server process."""
    qos = FakeQoS()
    plugin = OSTunerPlugin(
        state=TunerState(), qos=qos, process_finder=lambda names: [server], is_root=lambda: root, sysfs_cpu=sysfs
    )
    # restore at once unless a test is about the linger
    host = make_host(
        plugin,
        settings={"os-tuner": {"linger_seconds": 0, **(settings or {})}},
        load_entrypoints=entrypoints,
        env=env or {},
    )
    return host, plugin, qos


def request(i: int, stream: bool) -> ChatRequest:
    return ChatRequest(model="llama3.2:1b", stream=stream, messages=[Message(role="user", content=f"hello {i}")])


async def test_hundred_concurrent_requests_some_cancelled_leave_no_trace(sysfs: Path, server_proc: Any) -> None:
    host, plugin, qos = make(sysfs, server_proc.pid)
    backend = host.backend("fake")
    assert isinstance(backend, FakeBackend)
    backend.chunk_delay = 0.005
    backend.reply = " ".join(f"w{i}" for i in range(12))
    real_chat = backend.chat

    async def flaky_chat(req: ChatRequest, plan: Any) -> Any:
        await asyncio.sleep(0.01)
        if req.messages[0].content.endswith(("3", "7")):
            raise ConnectionError("upstream went away")
        return await real_chat(req, plan)

    backend.chat = flaky_chat  # type: ignore[method-assign]
    pipeline = Pipeline(host)
    before = snapshot(sysfs, qos, server_proc.pid)
    during: list[dict[str, Any]] = []

    async def one(i: int) -> None:
        prepared = await pipeline.plan(request(i, stream=i % 2 == 0), backend, LLAMA_1B)
        if i == 50:
            during.append(snapshot(sysfs, qos, server_proc.pid))
        if i % 2 == 0:
            async for _ in pipeline.stream(prepared):
                pass
        else:
            await pipeline.run(prepared)

    tasks = [asyncio.create_task(one(i)) for i in range(100)]
    await asyncio.sleep(0.02)
    for task in tasks[::5]:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    cancelled = sum(isinstance(r, asyncio.CancelledError) for r in results)
    failed = sum(isinstance(r, ConnectionError) for r in results)
    assert cancelled >= 5 and failed >= 5 and backend.cancelled >= 1
    gc.collect()
    assert plugin.state.active == 0 and plugin.state.applies >= 1 and plugin.state.restores == plugin.state.applies
    after = snapshot(sysfs, qos, server_proc.pid)
    assert after == before
    # and it really was tuned while requests ran
    assert during and during[0]["nice"] == {-5} and set(during[0]["server"].values()) == {-5}
    assert during[0]["gc"][0][0] == before["gc"][0][0] * 10 and during[0]["gc"][1] > 0
    assert {v.strip() for v in during[0]["governors"].values()} == {"performance"} and during[0]["qos"] == (0x19, 0)
    assert set(qos.threads) == {threading.get_ident()}  # set and restored on the event-loop thread


async def test_first_in_applies_last_out_restores(sysfs: Path, server_proc: Any) -> None:
    host, plugin, qos = make(sysfs, server_proc.pid)
    backend = host.backend("fake")
    pipeline = Pipeline(host)
    threshold = gc.get_threshold()
    a = await pipeline.plan(request(1, False), backend, LLAMA_1B)
    b = await pipeline.plan(request(2, False), backend, LLAMA_1B)
    assert plugin.state.active == 2 and gc.get_threshold() != threshold
    assert any(e.knob == "os.governor" and e.new == "applied" for e in a.plan.trace)
    assert any(e.knob == "os" and e.new == "shared" for e in b.plan.trace)
    await pipeline.run(a)
    assert plugin.state.active == 1 and gc.get_threshold() != threshold and qos.value == (0x19, 0)
    await pipeline.run(b)
    assert plugin.state.active == 0 and gc.get_threshold() == threshold and qos.value == (0x11, 0)
    assert plugin.state.applies == plugin.state.restores == 1


async def test_reports_what_could_not_apply_and_why(
    sysfs: Path, server_proc: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    host, plugin, _ = make(sysfs, server_proc.pid, root=False)

    def refuse(which: int, who: int, value: int) -> None:
        raise PermissionError("EACCES")

    monkeypatch.setattr(os, "setpriority", refuse)
    prepared = await Pipeline(host).plan(request(1, False), host.backend("fake"), LLAMA_1B)
    reasons = {e.knob: (e.new, e.reason) for e in prepared.plan.trace if e.plugin == "os-tuner"}
    assert reasons["os.nice"][0] == "not applied" and "CAP_SYS_NICE" in reasons["os.nice"][1]
    assert reasons["os.governor"] == ("not applied", "changing the CPU governor needs root")
    assert reasons["os.gc"][0] == "applied"
    status = plugin.status()
    assert status["active_requests"] == 1
    assert {r["knob"]: r["applied"] for r in status["last_apply"]}["governor"] is False
    await Pipeline(host).run(prepared)
    assert plugin.status()["active_requests"] == 0 and plugin.status()["last_restore"]


async def test_gc_freeze_of_someone_else_is_left_alone(sysfs: Path, server_proc: Any) -> None:
    host, _, _ = make(sysfs, server_proc.pid)
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        pipeline = Pipeline(host)
        prepared = await pipeline.plan(request(1, False), host.backend("fake"), LLAMA_1B)
        assert any("already frozen" in e.reason for e in prepared.plan.trace)
        await pipeline.run(prepared)
        assert gc.get_freeze_count() > frozen // 2  # not unfrozen by us (freed objects leave the count)
    finally:
        gc.unfreeze()


async def test_backstops_dropped_request_timer_and_shutdown(sysfs: Path, server_proc: Any) -> None:
    host, plugin, qos = make(sysfs, server_proc.pid, settings={"max_hold_seconds": 0.05})
    before = snapshot(sysfs, qos, server_proc.pid)
    pipeline = Pipeline(host)
    prepared = await pipeline.plan(request(1, False), host.backend("fake"), LLAMA_1B)
    assert plugin.state.active == 1
    del prepared  # refused after planning (e.g. queue full): nobody calls post_response
    gc.collect()
    assert plugin.state.active == 0 and snapshot(sysfs, qos, server_proc.pid) == before
    kept = await pipeline.plan(request(2, False), host.backend("fake"), LLAMA_1B)
    await asyncio.sleep(0.15)  # a lease never outlives max_hold_seconds
    assert plugin.state.active == 0 and snapshot(sysfs, qos, server_proc.pid) == before
    await pipeline.run(kept)  # releasing twice is harmless
    await pipeline.plan(request(3, False), host.backend("fake"), LLAMA_1B)
    await host.stop()
    assert plugin.state.active == 0 and snapshot(sysfs, qos, server_proc.pid) == before


@pytest.mark.parametrize("how", ["env", "settings"])
async def test_toggle(sysfs: Path, server_proc: Any, how: str, autotune_host_factory: Any) -> None:
    if how == "env":
        qos = FakeQoS()
        host = autotune_host_factory(load_entrypoints=True, env={"AUTOTUNE_DISABLE_PLUGINS": "os-tuner"})
        assert not host.enabled("os-tuner") and host.records["os-tuner"].status == "disabled"
    else:
        host, _, qos = make(
            sysfs,
            server_proc.pid,
            settings={"priority": False, "server_priority": False, "gc": False, "qos": False, "governor": False},
        )
    before = snapshot(sysfs, qos, server_proc.pid)
    pipeline = Pipeline(host)
    prepared = await pipeline.plan(request(1, False), host.backend("fake"), LLAMA_1B)
    assert snapshot(sysfs, qos, server_proc.pid) == before
    assert not any(e.plugin == "os-tuner" and e.new == "applied" for e in prepared.plan.trace)
    await pipeline.run(prepared)
    on = autotune_host_factory(load_entrypoints=True, env={"AUTOTUNE_LOAD_PLUGINS": "os-tuner"})
    assert on.enabled("os-tuner")


async def test_linger_keeps_the_tuning_between_back_to_back_requests(sysfs: Path, server_proc: Any) -> None:
    host, plugin, qos = make(sysfs, server_proc.pid, settings={"linger_seconds": 1.0})
    before = snapshot(sysfs, qos, server_proc.pid)
    pipeline = Pipeline(host)
    backend = host.backend("fake")
    first = await pipeline.plan(request(1, False), backend, LLAMA_1B)
    await pipeline.run(first)
    assert plugin.state.active == 0 and plugin.state.lingering and plugin.status()["tuned"]
    assert snapshot(sysfs, qos, server_proc.pid)["nice"] == {-5}  # still tuned right after the request
    for i in range(2, 6):
        prepared = await pipeline.plan(request(i, i % 2 == 0), backend, LLAMA_1B)
        assert any(e.plugin == "os-tuner" and e.new == "kept" for e in prepared.plan.trace)
        if prepared.request.stream:
            async for _ in pipeline.stream(prepared):
                pass
        else:
            await pipeline.run(prepared)
    assert plugin.state.applies == 1 and plugin.state.reuses == 4 and plugin.state.restores == 0
    deadline = time.monotonic() + 5
    while plugin.state.restores == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert plugin.state.restores == 1 and not plugin.state.lingering
    assert snapshot(sysfs, qos, server_proc.pid) == before


async def test_a_request_during_the_linger_postpones_the_restore(sysfs: Path, server_proc: Any) -> None:
    host, plugin, qos = make(sysfs, server_proc.pid, settings={"linger_seconds": 0.5})
    before = snapshot(sysfs, qos, server_proc.pid)
    pipeline = Pipeline(host)
    backend = host.backend("fake")
    await pipeline.run(await pipeline.plan(request(1, False), backend, LLAMA_1B))
    running = await pipeline.plan(request(2, False), backend, LLAMA_1B)  # within the linger: kept
    assert plugin.state.reuses == 1
    await asyncio.sleep(0.7)  # the first linger is over, but a request runs: nothing is restored under it
    assert plugin.state.restores == 0 and snapshot(sysfs, qos, server_proc.pid)["nice"] == {-5}
    await pipeline.run(running)
    assert plugin.state.restores == 0 and plugin.state.lingering  # a new linger starts from here
    deadline = time.monotonic() + 5
    while plugin.state.restores == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert plugin.state.applies == plugin.state.restores == 1
    assert snapshot(sysfs, qos, server_proc.pid) == before


async def test_shutdown_during_the_linger_restores_at_once(sysfs: Path, server_proc: Any) -> None:
    host, plugin, qos = make(sysfs, server_proc.pid, settings={"linger_seconds": 60})
    before = snapshot(sysfs, qos, server_proc.pid)
    pipeline = Pipeline(host)
    await pipeline.run(await pipeline.plan(request(1, False), host.backend("fake"), LLAMA_1B))
    assert plugin.state.lingering and snapshot(sysfs, qos, server_proc.pid) != before
    await host.stop()
    assert not plugin.state.lingering and plugin.state.restores == 1
    assert snapshot(sysfs, qos, server_proc.pid) == before


async def test_hosts_in_one_process_share_one_state(sysfs: Path, server_proc: Any, autotune_host_factory: Any) -> None:
    """Separate counts would restore out of order and leave the process tuned; one shared count cannot."""
    threshold, nice = gc.get_threshold(), os.getpriority(os.PRIO_PROCESS, 0)
    hosts = []
    for _ in range(3):
        qos = FakeQoS()
        plugin = OSTunerPlugin(
            qos=qos, process_finder=lambda names: [server_proc.pid], is_root=lambda: True, sysfs_cpu=sysfs
        )
        hosts.append(autotune_host_factory(plugin, settings={"os-tuner": {"linger_seconds": 0.5}}))
    state = process_state()
    applies, restores = state.applies, state.restores
    running = [await Pipeline(h).plan(request(i, False), h.backend("fake"), LLAMA_1B) for i, h in enumerate(hosts)]
    assert state.active == 3 and state.applies == applies + 1 and gc.get_threshold()[0] == threshold[0] * 10
    for host, prepared in zip(hosts, running, strict=True):
        await Pipeline(host).run(prepared)
    again = await Pipeline(hosts[1]).plan(request(9, False), hosts[1].backend("fake"), LLAMA_1B)
    assert state.applies == applies + 1  # joined within the linger
    await hosts[0].stop()  # stopping one host does not untune another host's running request
    await hosts[2].stop()
    assert state.active == 1 and state.restores == restores and gc.get_threshold()[0] == threshold[0] * 10
    await Pipeline(hosts[1]).run(again)
    deadline = time.monotonic() + 5
    while state.restores == restores and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert state.restores == restores + 1 and gc.get_threshold() == threshold
    assert os.getpriority(os.PRIO_PROCESS, 0) == nice


_EXIT_SCRIPT = """
import sys
from autotune_plugins.os_tuner import Lease, TunerState
from autotune_plugins.os_tuner.knobs import Outcome

class Marker:
    name = "marker"
    def apply(self):
        return Outcome("marker", True, "applied")
    def restore(self):
        open(sys.argv[1], "w").write("restored")
        return Outcome("marker", True, "restored")

state = TunerState()
token, _ = state.acquire(lambda: [Marker()])
HELD = [Lease(token, state, float(sys.argv[2]))]  # still referenced when the interpreter exits
"""


@pytest.mark.parametrize("linger", [0.0, 2.0])
def test_a_lease_still_held_at_exit_is_restored_and_the_process_ends(tmp_path: Path, linger: float) -> None:
    """The at-exit backstop: no hang (a lease's __del__ during finalization would start a linger timer thread,
    which never starts then on 3.11), and the knobs are restored."""
    import subprocess
    import sys

    marker = tmp_path / "restored.txt"
    script = tmp_path / "hold.py"
    script.write_text(_EXIT_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(marker), str(linger)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert marker.read_text() == "restored"
