"""os-tuner: raise scheduling priority and calm the garbage collector while inference runs, then put
everything back exactly.

Concurrent requests share one reference-counted state: the first request in applies, the last one out
restores — after ``linger_seconds`` without a new request, so back-to-back requests share one apply and
one restore instead of paying the syscalls (~0.5 ms as root) on every request. A request's lease is
released by post_response (which the pipeline runs after success, error and cancellation); as a backstop,
also when the request's context is dropped without it (for example a request refused after planning) and
after ``max_hold_seconds``, and on shutdown.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from autotune_core import ChatRequest, ChatResult, HookContext, Plan, PluginHost, StashKey, hookimpl

from .knobs import GCKnob, GovernorKnob, Knob, NiceKnob, Outcome, QoSControl, QoSKnob, default_qos, find_server_pids

__all__ = ["OSTunerPlugin", "TunerState", "process_state"]


class TunerSettings(BaseModel):
    """``[plugins.os-tuner]``."""

    model_config = ConfigDict(extra="forbid")

    #: lower our own niceness to ``nice`` during requests (needs root/CAP_SYS_NICE below the current value)
    priority: bool = True
    nice: int = Field(default=-5, ge=-20, le=19)
    #: also the model server's process(es), found by name among this user's processes
    server_priority: bool = True
    server_process_names: list[str] = Field(
        default_factory=lambda: ["ollama", "llama-server", "lms", "lm studio", "vllm", "lemonade"]
    )
    #: multiply the young-generation GC threshold by this and freeze the existing heap
    gc: bool = True
    gc_threshold_factor: int = Field(default=10, ge=1, le=1000)
    gc_freeze: bool = True
    #: macOS only: QoS class of the event-loop thread
    qos: bool = True
    qos_class: Literal["user_interactive", "user_initiated"] = "user_initiated"
    #: Linux, root only: cpufreq governor → performance
    governor: bool = True
    sysfs_cpu: str = "/sys/devices/system/cpu"
    #: a lease never outlives this (seconds), whatever happens to its request
    max_hold_seconds: float = Field(default=900.0, gt=0)
    #: keep the tuning this long after the last request ends (0: restore at once)
    linger_seconds: float = Field(default=2.0, ge=0, le=600)


class _Note:
    """A report line for a knob that had nothing to act on."""

    def __init__(self, name: str, detail: str) -> None:
        self.name, self.detail = name, detail

    def apply(self) -> Outcome:
        return Outcome(self.name, False, self.detail)

    def restore(self) -> Outcome | None:
        return None


def _restore_at_exit(ref: weakref.ref[TunerState]) -> None:
    state = ref()
    if state is not None:
        state.restore_all()


class TunerState:
    """Process state shared by concurrent requests: first in applies, last out restores (maybe after a
    linger, timed on a daemon thread so it fires whatever happens to the event loop that asked).

    One per process by default (:func:`process_state`): niceness and GC policy are process-wide, and two
    hosts counting separately would undo each other's changes out of order and leave the process tuned.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()  # a finalizer may release from inside a GC pass on this thread
        self._leases: dict[int, int] = {}  # token -> owner (the plugin instance that took it)
        self._next = 0
        self._restore_due: float | None = None
        self._timer: threading.Timer | None = None
        self.knobs: list[Knob] = []
        self.report: list[Outcome] = []
        self.last_restore: list[Outcome] = []
        self.applies = 0
        self.restores = 0
        self.reuses = 0
        # the at-exit backstop: leases still held (or a linger still running) when the process ends are
        # restored before the interpreter shuts down; a weak reference, so a dropped state is not kept alive
        atexit.register(_restore_at_exit, weakref.ref(self))

    @property
    def active(self) -> int:
        return len(self._leases)

    @property
    def lingering(self) -> bool:
        """Tuned with no request running: waiting out the linger before restoring."""
        return not self._leases and self._restore_due is not None

    def acquire(self, build: Callable[[], list[Knob]], owner: int = 0) -> tuple[int, bool]:
        """A lease; ``True`` when this call applied the knobs (not when it joined or reused them)."""
        with self._lock:
            self._next += 1
            token = self._next
            first = not self._leases and self._restore_due is None
            if self._restore_due is not None:  # lingering: keep what is applied
                self._restore_due = None
                self.reuses += 1
            self._leases[token] = owner
            if first:
                self.knobs = build()
                self.report = []
                for knob in self.knobs:
                    try:
                        self.report.append(knob.apply())
                    except Exception as exc:  # a knob that breaks must not break the request
                        self.report.append(Outcome(knob.name, False, f"failed: {type(exc).__name__}: {exc}"))
                self.applies += 1
            return token, first

    def release(self, token: int, linger: float = 0.0) -> bool:
        with self._lock:
            if token not in self._leases:
                return False
            del self._leases[token]
            if not self._leases:
                if linger > 0:
                    self._restore_due = time.monotonic() + linger
                    if self._timer is None:
                        self._start_timer(linger)
                else:
                    self._restore()
            return True

    def _start_timer(self, delay: float) -> None:
        timer = threading.Timer(delay, self._linger_over)
        timer.daemon = True
        self._timer = timer
        timer.start()

    def _linger_over(self) -> None:
        """One timer at a time: when it fires early (a request came and went), it waits for the rest."""
        with self._lock:
            self._timer = None
            if self._restore_due is None or self._leases:
                return
            remaining = self._restore_due - time.monotonic()
            if remaining > 0:
                self._start_timer(remaining)
                return
            self._restore()

    def restore_all(self, owner: int | None = None) -> None:
        """Drop every lease (of ``owner`` only, if given) and, if none is left, restore now: no linger."""
        with self._lock:
            if owner is None:
                self._leases.clear()
            else:
                self._leases = {token: who for token, who in self._leases.items() if who != owner}
            if self._leases:
                return
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self.knobs or self._restore_due is not None:
                self._restore()

    def _restore(self) -> None:
        self._restore_due = None
        outcomes: list[Outcome] = []
        for knob in reversed(self.knobs):
            try:
                outcome = knob.restore()
            except Exception as exc:
                outcome = Outcome(knob.name, False, f"restore failed: {type(exc).__name__}: {exc}")
            if outcome is not None:
                outcomes.append(outcome)
        self.knobs = []
        self.last_restore = outcomes
        self.restores += 1


_PROCESS_STATE = TunerState()


def process_state() -> TunerState:
    """The state every os-tuner instance in this process shares unless given its own."""
    return _PROCESS_STATE


class Lease:
    """One request's hold on the tuning. Released by post_response; if that never comes (a request refused
    after planning, a library caller that drops its plan), by the garbage collector when the request's
    context goes (the lease lives only in its stash), in any case after ``max_hold_seconds``, and at exit.

    ``__del__`` rather than ``weakref.finalize(ctx, ...)``: the same backstop without a finalizer object
    registered and detached on every request (~12 k of ~1,540 k instructions a request)."""

    __slots__ = ("linger", "released", "state", "timer", "token")

    def __init__(self, token: int, state: TunerState, linger: float = 0.0) -> None:
        self.token = token
        self.state = state
        self.linger = linger
        self.timer: asyncio.TimerHandle | None = None
        self.released = False

    def release(self) -> bool:
        if self.released:
            return False
        self.released = True
        if self.timer is not None:
            self.timer.cancel()
        return self.state.release(self.token, self.linger)

    def __del__(self) -> None:
        # not while the interpreter finalizes: a linger would start a timer thread, and Thread.start()
        # never returns then (Python 3.11); the state's atexit hook has restored everything already
        if not self.released and not sys.is_finalizing():
            with contextlib.suppress(Exception):
                self.state.release(self.token, self.linger)


LEASE: StashKey[Lease] = StashKey("os-tuner.lease")


class OSTunerPlugin:
    """Scheduling priority, GC policy, macOS QoS and the Linux CPU governor around each inference."""

    name = "os-tuner"
    Settings = TunerSettings

    def __init__(
        self,
        *,
        state: TunerState | None = None,
        qos: QoSControl | Literal["auto"] | None = "auto",
        process_finder: Callable[[list[str]], list[int]] | None = None,
        is_root: Callable[[], bool] | None = None,
        sysfs_cpu: str | Path | None = None,
    ) -> None:
        self.state = state if state is not None else process_state()
        self._qos = default_qos() if qos == "auto" else qos
        self._finder = process_finder or find_server_pids
        self._is_root = is_root or (lambda: hasattr(os, "geteuid") and os.geteuid() == 0)
        self._sysfs = Path(sysfs_cpu) if sysfs_cpu is not None else None
        self._pids: tuple[float, list[int]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _server_pids(self, names: list[str]) -> list[int]:
        """Cached for a minute: scanning the process table is not per-request work."""
        now = time.monotonic()
        if self._pids is None or now - self._pids[0] > 60:
            self._pids = (now, self._finder(names))
        return self._pids[1]

    def _build(self, settings: TunerSettings) -> list[Knob]:
        knobs: list[Knob] = []
        if settings.priority:
            knobs.append(NiceKnob("nice", os.getpid(), settings.nice, "autotune"))
        if settings.server_priority:
            pids = self._server_pids(settings.server_process_names)
            knobs.extend(NiceKnob("server_nice", pid, settings.nice, f"model server pid {pid}") for pid in pids)
            if not pids:
                knobs.append(_Note("server_nice", "no model-server process of this user found (or it runs in-process)"))
        if settings.gc:
            knobs.append(GCKnob(settings.gc_threshold_factor, settings.gc_freeze))
        if settings.qos:
            loop = self._loop
            knobs.append(
                QoSKnob(
                    self._qos,
                    settings.qos_class,
                    run_on_owner=(lambda fn: loop.call_soon_threadsafe(fn)) if loop else None,
                )
            )
        if settings.governor:
            knobs.append(GovernorKnob(self._sysfs or Path(settings.sysfs_cpu), self._is_root))
        return knobs

    @hookimpl(trylast=True)
    def pre_request(self, ctx: HookContext, request: ChatRequest, plan: Plan) -> None:
        """Late, so requests refused by earlier plugins never touch the OS."""
        settings = ctx.settings(TunerSettings)
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        token, first = self.state.acquire(lambda: self._build(settings), id(self))
        lease = Lease(token, self.state, settings.linger_seconds)
        if self._loop is not None:
            lease.timer = self._loop.call_later(settings.max_hold_seconds, self.state.release, token)
        ctx.stash[LEASE] = lease
        if first:
            for outcome in self.state.report:
                plan.record(
                    self.name,
                    f"os.{outcome.knob}",
                    None,
                    "applied" if outcome.applied else "not applied",
                    outcome.detail,
                )
        elif self.state.active == 1:
            plan.record(
                self.name,
                "os",
                None,
                "kept",
                f"still tuned from a request that ended under {settings.linger_seconds:g} s ago",
            )
        else:
            plan.record(
                self.name,
                "os",
                None,
                "shared",
                f"already tuned; shared with {self.state.active - 1} running request(s)",
            )

    @hookimpl
    def post_response(self, ctx: HookContext, request: ChatRequest, plan: Plan, result: ChatResult) -> None:
        lease = ctx.stash.get(LEASE)
        if lease is not None:
            lease.release()

    @hookimpl
    def on_shutdown(self, host: PluginHost) -> None:
        self.state.restore_all(id(self))

    @hookimpl
    def plugin_status(self) -> dict[str, Any]:
        """For ``/health`` and ``autotune status``."""
        return self.status()

    def status(self) -> dict[str, Any]:
        """For ``autotune status`` and /health: what applied, what did not and why."""
        return {
            "active_requests": self.state.active,
            "tuned": bool(self.state.knobs),
            "lingering": self.state.lingering,
            "applies": self.state.applies,
            "reuses": self.state.reuses,
            "restores": self.state.restores,
            "last_apply": [o.as_dict() for o in self.state.report],
            "last_restore": [o.as_dict() for o in self.state.last_restore],
        }
