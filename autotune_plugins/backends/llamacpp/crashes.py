"""Why a worker died, in words a user can act on, and when to stop restarting it.

A signal at the first token almost always means llama-cpp-python was compiled with ``-march=native`` on a
machine (often a VM) whose CPU advertises instructions (AVX-512, AMX) it does not really execute: the fix is
the portable build. ``SIGILL`` is deterministic, so it takes the backend down at once instead of retrying.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass

from autotune_core.errors import BackendCrashed

REINSTALL = 'CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install --force-reinstall --no-cache-dir llama-cpp-python'
FAULTS = frozenset({"SIGILL", "SIGSEGV", "SIGBUS", "SIGFPE", "SIGABRT"})


@dataclass(frozen=True)
class Crash:
    #: "SIGSEGV" etc., None for an exit status
    signal: str | None
    message: str
    before_first_token: bool
    when: float


def signal_name(returncode: int | None) -> str | None:
    if returncode is None or returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def describe(returncode: int | None, *, before_first_token: bool, killed: str | None = None) -> Crash:
    """The crash as the client, ``/health`` and ``autotune doctor`` will say it."""
    name = signal_name(returncode)
    if killed:
        text = f"the llama.cpp worker {killed}; autotune killed it, and the next request starts a fresh one"
        return Crash("SIGKILL", text, before_first_token, time.time())
    if name in FAULTS and before_first_token:
        text = (
            f"the llama.cpp worker crashed with {name} before its first token: llama-cpp-python was probably "
            "built for CPU instructions this machine does not run (a native build on a VM that advertises "
            f"AVX-512/AMX). Reinstall a portable build: {REINSTALL}"
        )
    elif name in FAULTS:
        text = (
            f"the llama.cpp worker crashed with {name} in the middle of an answer (a bug in llama.cpp or in "
            f"this model file); the next request starts a fresh worker. If it keeps happening: {REINSTALL}"
        )
    elif name == "SIGKILL":
        text = (
            "the llama.cpp worker was killed with SIGKILL, most likely by the kernel's out-of-memory killer "
            "(see `dmesg`): use a smaller model, a smaller context (num_ctx) or a quantized KV cache"
        )
    elif name is not None:
        text = f"the llama.cpp worker was killed by {name}"
    else:
        text = f"the llama.cpp worker exited unexpectedly with status {returncode} (its traceback is in the log)"
    return Crash(name, text, before_first_token, time.time())


class CrashPolicy:
    """Restart at once after one crash, then back off (doubling), and after ``max_crashes`` in a row stay down."""

    def __init__(self, *, max_crashes: int, backoff: float) -> None:
        self.max_crashes = max_crashes
        self.backoff = backoff
        self.streak = 0
        self.total = 0
        self.last: Crash | None = None
        self.down: str | None = None
        self._retry_at = 0.0

    def record(self, crash: Crash) -> None:
        self.streak += 1
        self.total += 1
        self.last = crash
        if crash.signal == "SIGILL" and crash.before_first_token:
            self.down = f"down: the build cannot run on this CPU; {crash.message}"
        elif self.streak >= self.max_crashes:
            self.down = (
                f"down after {self.streak} worker crashes in a row (restart autotune serve once fixed); "
                f"last: {crash.message}"
            )
        elif self.streak >= 2:
            self._retry_at = time.monotonic() + self.backoff * 2 ** (self.streak - 2)

    def success(self) -> None:
        self.streak = 0
        self._retry_at = 0.0

    def check(self) -> None:
        """Raise 502 ``backend_crashed`` while down or backing off; otherwise a worker may start."""
        if self.down:
            raise BackendCrashed(f"the embedded llama.cpp backend is {self.down}", signal=_sig(self.last))
        wait = self._retry_at - time.monotonic()
        if wait > 0 and self.last is not None:
            raise BackendCrashed(
                f"the llama.cpp worker crashed {self.streak} times in a row; the next start is in "
                f"{wait:.1f} s. Last: {self.last.message}",
                signal=self.last.signal,
            )

    def reason(self) -> str | None:
        """What ``available()`` reports (None while the backend may serve)."""
        return self.down


def _sig(crash: Crash | None) -> str | None:
    return crash.signal if crash is not None else None
