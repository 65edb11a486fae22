"""The llama.cpp worker process: ``python -m autotune_plugins.backends.llamacpp.worker --fd N --config JSON``.

It owns the ``Llama`` objects, so a crash, a hang or an out-of-memory kill inside llama.cpp ends only this
process; the server notices the closed socket, fails the requests it held and starts a fresh worker.

Two threads: the reader (this module's main loop) reads frames, sets cancel flags and answers quick
questions (tokenize, metadata, stats) at once, even during a long prefill; the job thread runs generations
and embeddings one at a time in arrival order (one ``Llama`` holds one sequence). A closed socket (the server
died or hung up) ends the process at once. (Not PR_SET_PDEATHSIG: it fires when the *thread* that started
the worker ends, e.g. an executor thread, not the server.)
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import socket
import threading
import time
from typing import Any

from .protocol import ProtocolError, json_frame, read_frame, token_frame
from .runner import Runner, error_event, test_crash


class SocketEmit:
    """Frames to the server; one lock so the two threads never interleave bytes."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lock = threading.Lock()

    def event(self, message: dict[str, Any]) -> None:
        self._send(json_frame(message))

    def token(self, request_id: int, text: str) -> None:
        self._send(token_frame(request_id, text, time.perf_counter()))

    def _send(self, frame: bytes) -> None:
        try:
            with self.lock:
                self.sock.sendall(frame)
        except OSError:
            os._exit(0)  # the server is gone: nobody to work for


class Worker:
    def __init__(self, sock: socket.socket, config: dict[str, Any]) -> None:
        self.sock = sock
        self.emit = SocketEmit(sock)
        self.runner = Runner(
            n_threads=int(config.get("n_threads") or 1),
            verbose=bool(config.get("verbose")),
            chat_template=config.get("chat_template"),
        )
        self.jobs: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self.cancelled: dict[int, threading.Event] = {}
        self.flags_lock = threading.Lock()

    def flag(self, request_id: int) -> threading.Event:
        with self.flags_lock:
            return self.cancelled.setdefault(request_id, threading.Event())

    # -- job thread ----------------------------------------------------------------------------------------

    def job_loop(self) -> None:
        while True:
            msg = self.jobs.get()
            if msg is None:
                return
            request_id = int(msg["id"])
            flag = self.flag(request_id)
            try:
                if flag.is_set():
                    self.emit.event({"ev": "cancelled", "id": request_id})
                elif msg["op"] == "gen":
                    self.runner.generate(msg, self.emit, flag)
                else:  # embed
                    try:
                        self.emit.event({"ev": "result", "id": request_id, "data": self.runner.embed(msg)})
                    except Exception as exc:
                        self.emit.event(error_event(request_id, exc))
            finally:
                with self.flags_lock:
                    self.cancelled.pop(request_id, None)

    # -- reader (main thread) ------------------------------------------------------------------------------

    def serve(self) -> None:
        threading.Thread(target=self.job_loop, name="autotune-llamacpp-job", daemon=True).start()
        self.emit.event({"ev": "hello", "pid": os.getpid()})
        while True:
            try:
                frame = read_frame(self.sock)
            except (OSError, ProtocolError):
                frame = None
            if frame is None or frame[0] != "json":
                os._exit(0)  # server gone (or nonsense on the wire): end without waiting for the job thread
            self.handle(frame[1])

    def handle(self, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        request_id = int(msg.get("id") or 0)
        if op in ("gen", "embed"):
            self.flag(request_id)
            self.jobs.put(msg)
        elif op == "cancel":
            with self.flags_lock:
                event = self.cancelled.get(request_id)
            if event is not None:
                event.set()
        elif op == "exit":
            self.emit.event({"ev": "bye"})
            os._exit(0)
        elif op in ("tokenize", "info", "stats"):
            threading.Thread(target=self.answer, args=(op, msg), daemon=True).start()
        else:
            self.emit.event({"ev": "error", "id": request_id, "kind": "upstream", "message": f"unknown op {op!r}"})

    def answer(self, op: str, msg: dict[str, Any]) -> None:
        request_id = int(msg["id"])
        try:
            if op == "tokenize":
                data: Any = self.runner.count_tokens(msg)
            elif op == "info":
                data = self.runner.metadata(msg)
            else:
                data = self.runner.stats()
            self.emit.event({"ev": "result", "id": request_id, "data": data})
        except Exception as exc:
            self.emit.event(error_event(request_id, exc))


def probe(path: str, config: dict[str, Any]) -> None:
    """One token from ``path``: a build compiled for instructions this CPU lacks dies here, not in the server."""
    from .engine import import_llama

    test_crash("at_load")
    llm = import_llama().Llama(
        model_path=path,
        n_ctx=256,
        n_batch=64,
        n_threads=int(config.get("n_threads") or 1),
        n_gpu_layers=0,
        verbose=False,
    )
    llm.create_completion("1, 2, 3,", max_tokens=1, temperature=0.0)
    print(json.dumps({"ok": True}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fd", type=int)
    parser.add_argument("--config", default="{}")
    parser.add_argument("--probe", metavar="GGUF", help="load this model, generate one token, exit 0")
    args = parser.parse_args(argv)
    if args.probe:
        probe(args.probe, json.loads(args.config))
        return
    if args.fd is None:
        parser.error("--fd is required")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the server's terminal is the server's to handle
    sock = socket.socket(fileno=args.fd)
    sock.setblocking(True)
    Worker(sock, json.loads(args.config)).serve()


if __name__ == "__main__":
    main()
