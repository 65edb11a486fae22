"""The OS knobs the tuner turns, each able to apply, report why it could not, and restore exactly.

Every knob remembers the value it replaced and restores it only if the value is still the one it set
(someone else's later change is theirs to keep). Nothing here spawns a subprocess.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import psutil


@dataclass
class Outcome:
    """One line of the tuner's report: what was tried, whether it applied, and why (not)."""

    knob: str
    applied: bool
    detail: str

    def as_dict(self) -> dict[str, object]:
        return {"knob": self.knob, "applied": self.applied, "detail": self.detail}


class Knob(Protocol):
    name: str

    def apply(self) -> Outcome: ...

    def restore(self) -> Outcome | None: ...


# -- niceness --------------------------------------------------------------------------------------


def _thread_ids(pid: int) -> list[int]:
    """Linux niceness is per thread, so every thread is set; elsewhere the process as a whole."""
    if sys.platform.startswith("linux"):
        try:
            return [t.id for t in psutil.Process(pid).threads()]
        except (psutil.Error, OSError):
            return []
    return [pid]


@dataclass
class NiceKnob:
    """Lower the niceness (raise priority) of a process's threads to ``target``; restore each thread."""

    name: str
    pid: int
    target: int
    label: str
    saved: dict[int, int] = field(default_factory=dict)

    def apply(self) -> Outcome:
        self.saved.clear()
        tids = _thread_ids(self.pid)
        if not tids:
            return Outcome(self.name, False, f"{self.label}: process is gone")
        changed = already = 0
        error = ""
        for tid in tids:
            try:
                current = os.getpriority(os.PRIO_PROCESS, tid)
            except OSError:
                continue
            if current <= self.target:
                already += 1
                continue
            try:
                os.setpriority(os.PRIO_PROCESS, tid, self.target)
            except PermissionError:
                error = "not permitted (raising priority needs root or CAP_SYS_NICE)"
                break
            except OSError as exc:
                error = str(exc)
                continue
            self.saved[tid] = current
            changed += 1
        if changed:
            return Outcome(self.name, True, f"{self.label}: nice {self.target} on {changed} thread(s)")
        return Outcome(
            self.name, False, f"{self.label}: " + (error or f"already at nice ≤ {self.target} ({already} thread(s))")
        )

    def restore(self) -> Outcome | None:
        if not self.saved:
            return None
        base = next(iter(self.saved.values()))
        restored = 0
        for tid in _thread_ids(self.pid):
            try:
                current = os.getpriority(os.PRIO_PROCESS, tid)
                if current != self.target:
                    continue  # changed by someone else since: theirs to keep
                # threads born while boosted inherited the boost: give them the process's old value
                os.setpriority(os.PRIO_PROCESS, tid, self.saved.get(tid, base))
                restored += 1
            except OSError:
                continue
        self.saved.clear()
        return Outcome(self.name, True, f"{self.label}: restored {restored} thread(s)")


def find_server_pids(names: Iterable[str], *, limit: int = 4) -> list[int]:
    """Model-server processes by name, owned by this user (never another user's process)."""
    wanted = [n.lower() for n in names]
    if not wanted:
        return []
    try:
        me = psutil.Process().username()
    except psutil.Error:
        return []
    found: list[int] = []
    for proc in psutil.process_iter(["name", "username", "pid"]):
        info = proc.info
        name = (info.get("name") or "").lower()
        if info.get("username") == me and any(w in name for w in wanted) and info["pid"] != os.getpid():
            found.append(int(info["pid"]))
            if len(found) >= limit:
                break
    return found


# -- garbage collector ------------------------------------------------------------------------------


@dataclass
class GCKnob:
    """Raise the young-generation threshold and freeze the existing heap while requests run.

    Cheaper young collections during streaming, without ever disabling the collector. Only freezes
    when nothing else has frozen objects, so ``gc.unfreeze`` cannot undo someone else's freeze.
    """

    factor: int
    freeze: bool
    name: str = "gc"
    saved_threshold: tuple[int, ...] | None = None
    froze: bool = False
    new_threshold: tuple[int, ...] | None = None

    def apply(self) -> Outcome:
        if not gc.isenabled():
            return Outcome(self.name, False, "the garbage collector is disabled by the application; left alone")
        self.saved_threshold = gc.get_threshold()
        t0, *rest = self.saved_threshold
        self.new_threshold = (t0 * self.factor, *rest) if self.factor > 1 else self.saved_threshold
        gc.set_threshold(*self.new_threshold)
        parts = [f"threshold {self.saved_threshold} → {self.new_threshold}"]
        self.froze = False
        if self.freeze:
            if gc.get_freeze_count() == 0:
                gc.freeze()
                self.froze = True
                parts.append("heap frozen")
            else:
                parts.append("not frozen (objects already frozen by someone else)")
        return Outcome(self.name, True, ", ".join(parts))

    def restore(self) -> Outcome | None:
        if self.saved_threshold is None:
            return None
        if gc.get_threshold() == self.new_threshold:
            gc.set_threshold(*self.saved_threshold)
        if self.froze:
            gc.unfreeze()
        self.saved_threshold, self.froze = None, False
        return Outcome(self.name, True, "threshold and freeze state restored")


# -- macOS QoS ---------------------------------------------------------------------------------------

QOS_CLASSES = {"user_interactive": 0x21, "user_initiated": 0x19, "default": 0x15, "utility": 0x11}


class QoSControl(Protocol):
    """Read and set the calling thread's QoS class (macOS pthread API; fakes in tests)."""

    def get(self) -> tuple[int, int]: ...

    def set(self, qos: int, relpri: int) -> None: ...


class MacQoS:
    """``pthread_get_qos_class_np`` / ``pthread_set_qos_class_self_np`` through ctypes."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.dylib")
        self._self = libc.pthread_self
        self._self.restype = ctypes.c_void_p
        self._get = libc.pthread_get_qos_class_np
        self._get.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_int)]
        self._set = libc.pthread_set_qos_class_self_np
        self._set.argtypes = [ctypes.c_uint, ctypes.c_int]

    def get(self) -> tuple[int, int]:
        qos, rel = ctypes.c_uint(0), ctypes.c_int(0)
        if self._get(self._self(), ctypes.byref(qos), ctypes.byref(rel)) != 0:
            raise OSError("pthread_get_qos_class_np failed")
        return int(qos.value), int(rel.value)

    def set(self, qos: int, relpri: int) -> None:
        if self._set(qos, relpri) != 0:
            raise OSError("pthread_set_qos_class_self_np failed")


def default_qos() -> QoSControl | None:
    if sys.platform != "darwin":
        return None
    try:
        return MacQoS()
    except (OSError, AttributeError):
        return None


@dataclass
class QoSKnob:
    """The QoS class of the thread that relays the stream (the event loop's), restored to its
    previous value, on that same thread (the API only sets the calling thread)."""

    control: QoSControl | None
    qos_class: str
    run_on_owner: Callable[[Callable[[], None]], object] | None = None
    name: str = "qos"
    saved: tuple[int, int] | None = None
    thread: int | None = None

    def apply(self) -> Outcome:
        if self.control is None:
            return Outcome(self.name, False, "QoS classes exist on macOS only")
        try:
            self.saved = self.control.get()
            self.control.set(QOS_CLASSES[self.qos_class], 0)
        except OSError as exc:
            self.saved = None
            return Outcome(self.name, False, str(exc))
        self.thread = threading.get_ident()
        return Outcome(self.name, True, f"{self.qos_class} on the event-loop thread (was {self.saved[0]:#x})")

    def restore(self) -> Outcome | None:
        if self.saved is None or self.control is None:
            return None
        saved, control = self.saved, self.control
        self.saved = None

        def put_back() -> None:
            control.set(*saved)

        if threading.get_ident() == self.thread:
            put_back()
        elif self.run_on_owner is not None:
            self.run_on_owner(put_back)  # the owning thread restores its own QoS
        else:
            return Outcome(self.name, False, "restore requested off the owning thread; QoS left as set")
        return Outcome(self.name, True, f"restored to {saved[0]:#x}")


# -- Linux CPU governor ------------------------------------------------------------------------------


@dataclass
class GovernorKnob:
    """Every CPU's cpufreq governor to ``performance`` (root only); each file put back as it was."""

    sysfs: Path
    is_root: Callable[[], bool]
    name: str = "governor"
    target: str = "performance"
    saved: dict[Path, str] = field(default_factory=dict)

    def apply(self) -> Outcome:
        self.saved.clear()
        files = sorted(self.sysfs.glob("cpu[0-9]*/cpufreq/scaling_governor"))
        if not files:
            return Outcome(self.name, False, f"no cpufreq governors under {self.sysfs}")
        if not self.is_root():
            return Outcome(self.name, False, "changing the CPU governor needs root")
        for path in files:
            try:
                raw = path.read_text()
                current = raw.strip()
                available = path.with_name("scaling_available_governors")
                if available.exists() and self.target not in available.read_text().split():
                    continue
                if current == self.target:
                    continue
                path.write_text(self.target)
                self.saved[path] = raw  # byte for byte, trailing newline included
            except OSError:
                continue
        if not self.saved:
            return Outcome(self.name, False, f"already {self.target}, or not offered, on every CPU")
        return Outcome(self.name, True, f"{self.target} on {len(self.saved)} CPU(s)")

    def restore(self) -> Outcome | None:
        if not self.saved:
            return None
        restored = 0
        for path, value in self.saved.items():
            try:
                if path.read_text().strip() == self.target:
                    path.write_text(value)
                    restored += 1
            except OSError:
                continue
        self.saved.clear()
        return Outcome(self.name, True, f"restored {restored} CPU(s)")
