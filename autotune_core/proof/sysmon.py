"""Memory of the model-server process while an arm runs: peak RSS (sampled) and swap in/out.

Which process: for a server backend, the one listening on the backend's port plus its children (Ollama's
runners are child processes); for the embedded engine, that arm's own worker process (found again at every
sample: it ends on unload and starts on the next request), else this process. RSS is sampled every 100 ms
in a thread; swap counters are system-wide, read before and after each block (blocks of different arms
never overlap, so the counts belong to the arm that ran).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from urllib.parse import urlparse

import psutil


def _listener(port: int) -> int | None:
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return int(conn.pid)
    return None


def worker_pid(backend: object) -> int | None:
    """The embedded engine's worker process right now (it ends on unload and starts on the next request)."""
    engine = getattr(backend, "engine", None)
    value = getattr(engine, "pid", None) if engine is not None else None
    return value if isinstance(value, int) and value > 0 else None


def has_worker(backend: object) -> bool:
    engine = getattr(backend, "engine", None)
    return engine is not None and hasattr(type(engine), "pid")


def server_pids(backend: object) -> tuple[list[int], str]:
    """(pids, how they were found) for the process that holds the model."""
    if has_worker(backend):
        pid = worker_pid(backend)
        return ([pid] if pid else []), "the embedded engine's worker process (this arm's own)"
    url = getattr(backend, "url", None)
    if isinstance(url, str) and url:
        parsed = urlparse(url)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        pid = _listener(port)
        if pid is not None:
            return _with_children(pid), f"process listening on port {port} and its children"
        return [], f"no local process listens on port {port}"
    return [os.getpid()], "this process (the embedded engine runs in-process)"


def _children(proc: psutil.Process) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        return list(proc.children(recursive=True))
    return []


def _with_children(pid: int) -> list[int]:
    with contextlib.suppress(psutil.Error):
        return [pid, *(p.pid for p in _children(psutil.Process(pid)))]
    return [pid]


def rss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            total += psutil.Process(pid).memory_info().rss
    return total


def swap_counters() -> tuple[int, int]:
    with contextlib.suppress(Exception):
        swap = psutil.swap_memory()
        return int(swap.sin), int(swap.sout)
    return 0, 0


class PeakSampler:
    """Samples the RSS of a changing set of pids; ``peak()`` per label (the arm running)."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.label: str | None = None
        self.pids: list[int] = []
        #: re-reads the pids at every sample (an embedded worker starts during the block's first request)
        self.find: Callable[[], list[int]] | None = None
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="autotune-proof-rss", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def watch(self, label: str | None, pids: list[int], find: Callable[[], list[int]] | None = None) -> None:
        self.label, self.pids, self.find = label, list(pids), find
        if label is not None:
            self.sample()

    def sample(self) -> None:
        label, pids, find = self.label, self.pids, self.find
        if find is not None:
            with contextlib.suppress(Exception):
                pids = find()
        if label is None or not pids:
            return
        value = rss(pids)
        if value > self.peaks.get(label, 0):
            self.peaks[label] = value

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
