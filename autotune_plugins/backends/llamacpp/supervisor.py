"""The server's side of the llama.cpp worker: start it, talk to it, notice when it dies, end it on unload.

Why a ``python -m ...worker`` subprocess on a socketpair, read with ``loop.add_reader``: the server has
threads and an event loop, so ``fork`` is unsafe, and ``multiprocessing`` (spawn/forkserver) would re-import
the server's ``__main__`` and hand us blocking ``Connection`` objects that need a thread per read. A raw
non-blocking socket read by the event loop itself costs one wake-up per token and no thread hop, and it is
bound to no particular loop (tests and the CLI use several): :meth:`WorkerProcess.bind` moves the reader to
whichever loop calls next.

One request id per call; each has a :class:`Sink` (an asyncio queue on the caller's loop). A dead worker
(EOF on the socket) fails every sink it held with 502 ``backend_crashed`` naming the signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any

from autotune_core.errors import BackendCrashed, ContextOverflow, InvalidRequest, UpstreamError
from autotune_core.modelinfo import ModelInfo

from .crashes import CrashPolicy, describe
from .engine import LoadParams
from .protocol import Frame, FrameBuffer, ProtocolError, json_frame

log = logging.getLogger("autotune.llamacpp")

WORKER_MODULE = "autotune_plugins.backends.llamacpp.worker"


@dataclass
class LoadedView:
    """What the worker has loaded, as it reported it (the ``Llama`` itself lives in the worker)."""

    params: LoadParams
    info: ModelInfo
    load_ms: float
    kv_bytes_measured: int | None
    kv_log: list[str] = field(default_factory=list)


class Sink:
    """One call's events, delivered to the loop that made the call."""

    __slots__ = ("abandoned", "job", "keep_alive", "last", "loop", "queue", "tokens", "worker")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, worker: WorkerProcess, *, job: bool, keep_alive: float | None = None
    ) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.worker = worker
        self.job = job
        self.keep_alive = keep_alive
        self.tokens = 0
        self.abandoned = False
        self.last = time.monotonic()

    def put(self, item: tuple[str, Any], current: asyncio.AbstractEventLoop | None) -> None:
        if self.abandoned:
            return
        if current is self.loop:
            self.queue.put_nowait(item)
        elif not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


class WorkerProcess:
    """One worker process and the server's end of its socket."""

    def __init__(
        self,
        config: dict[str, Any],
        on_frame: Callable[[WorkerProcess, Frame], None],
        on_eof: Callable[[WorkerProcess], None],
    ) -> None:
        parent, child = socket.socketpair()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", WORKER_MODULE, "--fd", str(child.fileno()), "--config", json.dumps(config)],
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                close_fds=True,
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        parent.setblocking(False)
        self.sock = parent
        self.pid = self.proc.pid
        self._buffer = FrameBuffer()
        self._out = bytearray()
        self._on_frame, self._on_eof = on_frame, on_eof
        self.loop: asyncio.AbstractEventLoop | None = None
        self.closed = False
        #: set when autotune ends the worker on purpose (unload, keep-alive, shutdown): not a crash
        self.expected_exit = False
        #: set when autotune killed a hung worker: the crash message says so
        self.killed: str | None = None
        #: its death was handled (requests failed, crash counted): once only, whoever notices first
        self.forgotten = False
        self.tokens = 0

    def alive(self) -> bool:
        return not self.closed and self.proc.poll() is None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Read the socket from ``loop`` (moving off a previous, finished loop)."""
        if self.loop is loop or self.closed:
            return
        old, self.loop = self.loop, loop
        if old is not None and not old.is_closed():
            with contextlib.suppress(Exception):
                if old.is_running():
                    old.call_soon_threadsafe(old.remove_reader, self.sock.fileno())
                    old.call_soon_threadsafe(old.remove_writer, self.sock.fileno())
                else:
                    old.remove_reader(self.sock.fileno())
                    old.remove_writer(self.sock.fileno())
        loop.add_reader(self.sock.fileno(), self._readable)
        if self._out:
            loop.add_writer(self.sock.fileno(), self._flush)

    def write(self, frame: bytes) -> None:
        """Queue ``frame`` (call from the bound loop): sent at once when the socket has room, which is the rule."""
        if self.closed:
            raise BackendCrashed("the llama.cpp worker is gone")
        if not self._out:
            try:
                sent = self.sock.send(frame)
            except BlockingIOError:
                sent = 0
            except OSError:
                return  # the reader sees EOF and fails the pending calls
            if sent == len(frame):
                return
            frame = frame[sent:]
            if self.loop is not None:
                self.loop.add_writer(self.sock.fileno(), self._flush)
        self._out += frame

    def _flush(self) -> None:
        try:
            sent = self.sock.send(self._out)
        except BlockingIOError:
            return
        except OSError:
            sent = len(self._out)
        del self._out[:sent]
        if not self._out and self.loop is not None:
            self.loop.remove_writer(self.sock.fileno())

    def _readable(self) -> None:
        try:
            data = self.sock.recv(1 << 18)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close()
            return
        try:
            frames = self._buffer.feed(data)
        except (ProtocolError, ValueError) as exc:
            log.error("llama.cpp worker sent a bad frame (%s); killing it", exc)
            self.killed = f"sent a frame autotune could not read ({exc})"
            self.kill()
            self._close()
            return
        for frame in frames:
            self._on_frame(self, frame)

    def close(self) -> None:
        """Stop reading (the process has ended or is about to)."""
        self._close()

    def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.loop is not None and not self.loop.is_closed():
            with contextlib.suppress(Exception):
                self.loop.remove_reader(self.sock.fileno())
            with contextlib.suppress(Exception):
                self.loop.remove_writer(self.sock.fileno())
        self.sock.close()
        self._on_eof(self)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()

    def terminate(self) -> None:
        """End on purpose (SIGTERM; the worker holds nothing that needs flushing)."""
        self.expected_exit = True
        with contextlib.suppress(ProcessLookupError):
            self.proc.terminate()

    async def returncode(self, limit: float = 3.0) -> int | None:
        """The exit status once the process is gone (EOF can come a moment before it is reapable)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                return code
            await asyncio.sleep(0.005)
        self.kill()
        return await asyncio.to_thread(self.proc.wait, 5)


def reap(worker: WorkerProcess, limit: float = 5.0) -> None:
    """Wait for an ended worker on a thread (no zombie), SIGKILL after ``limit``; then close its socket on
    its loop (or here, when that loop is gone)."""

    def wait() -> None:
        _wait_quietly(worker.proc, limit)
        loop = worker.loop
        if loop is not None and loop.is_running():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(worker.close)
                return
        if loop is None or loop.is_closed():
            worker.close()

    threading.Thread(target=wait, name="autotune-llamacpp-reap", daemon=True).start()


_ERRORS: dict[str, type[Exception]] = {"context_overflow": ContextOverflow, "invalid_request": InvalidRequest}


class Supervisor:
    """The worker's lifecycle as the backend sees it: counters, the loaded model, keep-alive, crashes."""

    def __init__(self, config: dict[str, Any], *, cancel_grace: float, max_crashes: int, crash_backoff: float) -> None:
        self.config = config
        self.cancel_grace = cancel_grace
        self.crashes = CrashPolicy(max_crashes=max_crashes, backoff=crash_backoff)
        self.loads = 0
        self.reloads = 0
        self.starts = 0
        self.last_reload_ms: float | None = None
        self.loaded: LoadedView | None = None
        self.worker: WorkerProcess | None = None
        self.pending: dict[int, Sink] = {}
        #: generations and embeddings sent and not yet finished (the keep-alive timer waits for 0)
        self.busy = 0
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._epoch = 0

    @property
    def pid(self) -> int | None:
        worker = self.worker
        return worker.pid if worker is not None and worker.alive() else None

    # -- starting --------------------------------------------------------------------------------------------

    def _worker(self) -> WorkerProcess:
        loop = asyncio.get_running_loop()
        worker = self.worker
        if worker is not None and not worker.alive():
            self._forget(worker, worker.proc.poll())  # died while nobody was listening
            worker = None
        if worker is None:
            self.crashes.check()
            worker = WorkerProcess(self.config, self._on_frame, self._on_eof)
            self.worker = worker
            self.starts += 1
            log.info("started llama.cpp worker pid %d", worker.pid)
        worker.bind(loop)
        return worker

    def _open(self, message: dict[str, Any], *, job: bool, keep_alive: float | None = None) -> tuple[int, Sink]:
        worker = self._worker()
        request_id = next(self._ids)
        sink = Sink(asyncio.get_running_loop(), worker, job=job, keep_alive=keep_alive)
        self.pending[request_id] = sink
        if job:
            with self._lock:
                self.busy += 1
                self._cancel_timer()
        worker.write(json_frame({**message, "id": request_id}))
        return request_id, sink

    # -- calls -----------------------------------------------------------------------------------------------

    async def generate(self, message: dict[str, Any], keep_alive: float | None) -> AsyncGenerator[tuple[str, Any]]:
        """("token", text) ... then ("done", final dict); raises the worker's or a crash's error.

        Leaving early (the client went away) cancels: the worker stops at its next token, or is killed if it
        stays silent for ``cancel_grace`` seconds (a hung worker)."""
        request_id, sink = self._open(message, job=True, keep_alive=keep_alive)
        finished = False
        try:
            while True:
                kind, item = await sink.queue.get()
                if kind == "token":
                    yield kind, item
                elif kind == "done":
                    finished = True
                    yield kind, item
                    return
                elif kind == "error":
                    finished = True
                    raise item
                elif kind == "cancelled":
                    finished = True
                    return
        finally:
            if not finished:
                self._abandon(request_id, sink)

    async def call(self, op: str, *, keep_alive: float | None = None, **fields: Any) -> Any:
        """One answer: tokenize, info, stats (answered at once) or embed (queued behind generations; like a
        generation it re-arms the idle timer with ``keep_alive``)."""
        job = op == "embed"
        request_id, sink = self._open({"op": op, **fields}, job=job, keep_alive=keep_alive)
        try:
            kind, item = await sink.queue.get()
        except BaseException:
            self._abandon(request_id, sink)
            raise
        if kind == "error":
            raise item
        return item

    def _abandon(self, request_id: int, sink: Sink) -> None:
        sink.abandoned = True
        worker = sink.worker
        if request_id not in self.pending or not worker.alive():
            return
        if sink.job:
            with contextlib.suppress(Exception):
                worker.write(json_frame({"op": "cancel", "id": request_id}))
            delay = max(0.0, sink.last + self.cancel_grace - time.monotonic())
            sink.loop.call_later(delay, self._overdue, request_id, sink)
        else:
            self.pending.pop(request_id, None)

    def _overdue(self, request_id: int, sink: Sink) -> None:
        """A cancelled job still running ``cancel_grace`` s after its last sign of life: the worker hangs."""
        if self.pending.get(request_id) is not sink or not sink.worker.alive():
            return
        if time.monotonic() - sink.last < self.cancel_grace:  # it is still talking: look again later
            sink.loop.call_later(self.cancel_grace, self._overdue, request_id, sink)
            return
        log.warning(
            "llama.cpp worker pid %d did not stop within %.1f s of a cancel; killing it",
            sink.worker.pid,
            self.cancel_grace,
        )
        sink.worker.killed = f"stopped answering (silent for {self.cancel_grace:g} s after a cancel)"
        sink.worker.kill()

    # -- events ----------------------------------------------------------------------------------------------

    def _on_frame(self, worker: WorkerProcess, frame: Frame) -> None:
        loop = worker.loop
        kind, data = frame
        if kind == "token":
            request_id, _produced, text = data
            worker.tokens += 1
            sink = self.pending.get(request_id)
            if sink is not None:
                sink.tokens += 1
                sink.last = time.monotonic()
                sink.put(("token", text), loop)
            return
        event = data.get("ev")
        request_id = int(data.get("id") or 0)
        sink = self.pending.get(request_id)
        if event == "loaded":
            self._loaded(data)
            if sink is not None:
                sink.last = time.monotonic()
            return
        if event not in ("done", "cancelled", "error", "result") or sink is None:
            return
        del self.pending[request_id]
        if sink.job:
            self._job_finished(sink, ok=event in ("done", "result"))
        if event == "done":
            sink.put(("done", data["final"]), loop)
        elif event == "result":
            sink.put(("result", data.get("data")), loop)
        elif event == "cancelled":
            sink.put(("cancelled", None), loop)
        else:
            error = _ERRORS.get(str(data.get("kind")), UpstreamError)(str(data.get("message") or "llama.cpp failed"))
            sink.put(("error", error), loop)

    def _loaded(self, data: dict[str, Any]) -> None:
        params = LoadParams(**data["params"])
        info = ModelInfo.model_validate(data["info"])
        if data.get("load_ms") is not None:
            self.loads += 1
            if data.get("reloaded"):
                self.reloads += 1
                self.last_reload_ms = float(data["load_ms"])
        previous = self.loaded
        load_ms = (
            float(data["load_ms"])
            if data.get("load_ms") is not None
            else (previous.load_ms if previous is not None else 0.0)
        )
        self.loaded = LoadedView(
            params=params,
            info=info,
            load_ms=load_ms,
            kv_bytes_measured=data.get("kv_bytes_measured"),
            kv_log=list(data.get("kv_log") or []),
        )

    def _job_finished(self, sink: Sink, *, ok: bool) -> None:
        if ok:
            self.crashes.success()
        with self._lock:
            self.busy = max(0, self.busy - 1)
            if self.busy == 0 and sink.keep_alive is not None:
                self._schedule(sink.keep_alive)

    def _on_eof(self, worker: WorkerProcess) -> None:
        if not worker.forgotten and worker.loop is not None and not worker.loop.is_closed():
            worker.loop.create_task(self._exited(worker))

    async def _exited(self, worker: WorkerProcess) -> None:
        self._forget(worker, await worker.returncode())

    def _forget(self, worker: WorkerProcess, returncode: int | None) -> None:
        """The worker is gone: fail what it held; a death we did not ask for counts as a crash (once)."""
        if worker.forgotten:
            return
        worker.forgotten = True
        # stop reading before the socket closes: a new worker's socket may get the same fd number, and a
        # stale registration in the event loop would swallow its frames
        worker.close()
        if self.worker is worker:
            self.worker = None
            self.loaded = None
        held = sorted((rid, sink) for rid, sink in self.pending.items() if sink.worker is worker)
        for rid, _sink in held:
            del self.pending[rid]
        jobs = [sink for _rid, sink in held if sink.job]
        with self._lock:
            self.busy = max(0, self.busy - len(jobs))
        if worker.expected_exit and not worker.killed:
            error: Exception = UpstreamError("the llama.cpp worker was stopped (the model was unloaded)")
        else:
            # the oldest job is the one the worker was running (the others waited in its queue)
            before_first = jobs[0].tokens == 0 if jobs else worker.tokens == 0
            crash = describe(returncode, before_first_token=before_first, killed=worker.killed)
            self.crashes.record(crash)
            log.error("llama.cpp worker pid %d ended: %s", worker.pid, crash.message)
            error = BackendCrashed(crash.message, signal=crash.signal)
        for _rid, sink in held:
            sink.put(("error", error), worker.loop if worker.loop is not None else None)

    # -- keep-alive and unload -------------------------------------------------------------------------------

    def _schedule(self, seconds: float) -> None:
        """Call with ``_lock`` held: end the worker after ``seconds`` idle (0: now; negative: never)."""
        self._cancel_timer()
        self._epoch += 1
        if seconds < 0:
            return
        if seconds == 0:
            self._stop_locked()
            return
        timer = threading.Timer(seconds, self._expire, args=(self._epoch,))
        timer.daemon = True
        self._timer = timer
        timer.start()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self, epoch: int) -> None:
        with self._lock:
            if epoch == self._epoch and self.busy == 0:
                self._stop_locked()

    def _stop_locked(self) -> bool:
        """End the worker so its memory goes back to the OS; True if one was running."""
        worker, self.worker = self.worker, None
        self.loaded = None
        if worker is None or not worker.alive():
            return False
        worker.terminate()
        reap(worker)
        return True

    async def unload(self, wait_idle: float = 30.0) -> bool:
        """End the worker (after the jobs in flight, waiting at most ``wait_idle`` s) and wait until it exited."""
        deadline = time.monotonic() + wait_idle
        while self.busy and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        with self._lock:
            self._cancel_timer()
            self._epoch += 1
            worker = self.worker
            had_model = self.loaded is not None
            stopped = self._stop_locked()
        if stopped and worker is not None:
            await asyncio.to_thread(_wait_quietly, worker.proc, 5.0)
        return stopped and had_model

    async def close(self) -> None:
        await self.unload(wait_idle=0.0)


def _wait_quietly(proc: subprocess.Popen[bytes], limit: float) -> None:
    with contextlib.suppress(Exception):
        proc.wait(limit)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
