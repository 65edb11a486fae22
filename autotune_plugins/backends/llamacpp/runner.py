"""What the worker does with each command (load + generate, embed, tokenize, metadata, stats); no sockets here.

The worker process drives a :class:`Runner` from its frames; ``bench/embedded_worker.py`` drives the same
Runner on a thread in its own process, so the benchmark compares exactly the process boundary.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from dataclasses import asdict
from typing import Any, Protocol

from autotune_core.errors import ContextOverflow, InvalidRequest

from .engine import Engine, Loaded, LoadParams, make_formatter, reusable_prefix

#: the test-only crash switch (read here, in the worker, only): at_load | mid_stream | hang, optionally
#: ":SIGNAME" (default SIGSEGV); tests set it in the server's environment, which the worker inherits
CRASH_ENV = "AUTOTUNE_TEST_WORKER_CRASH"


class Emit(Protocol):
    """Where a runner's events go (the socket in the worker, a queue in the benchmark)."""

    def event(self, message: dict[str, Any]) -> None: ...

    def token(self, request_id: int, text: str) -> None: ...


def test_crash(point: str) -> None:
    """Die (or hang) here if the test switch names this point."""
    where, _, name = os.environ.get(CRASH_ENV, "").partition(":")
    if where != point:
        return
    if point == "hang":
        time.sleep(3600)
        return
    os.kill(os.getpid(), getattr(signal, name or "SIGSEGV"))
    time.sleep(5)  # the signal is delivered asynchronously; never go on


def error_event(request_id: int, exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, ContextOverflow):
        kind = "context_overflow"
    elif isinstance(exc, InvalidRequest):
        kind = "invalid_request"
    else:
        kind = "upstream"
    message = (
        exc.message
        if isinstance(exc, ContextOverflow | InvalidRequest)
        else f"llama.cpp failed: {type(exc).__name__}: {exc}"
    )
    return {"ev": "error", "id": request_id, "kind": kind, "message": message[:2000]}


class Runner:
    """One engine (one model at a time) plus the vocab-only tokenizers; jobs run one at a time."""

    def __init__(self, *, n_threads: int, verbose: bool, chat_template: str | None) -> None:
        self.engine = Engine(n_threads=n_threads, verbose=verbose, chat_template=chat_template)
        self.chat_template = chat_template
        self._formatters: dict[str, Any] = {}
        self._formatter_lock = threading.Lock()

    # -- generation (the job thread) ------------------------------------------------------------------------

    def generate(self, msg: dict[str, Any], emit: Emit, cancelled: threading.Event) -> None:
        """Load if needed, stream tokens, end with exactly one done / cancelled / error event."""
        request_id = int(msg["id"])
        try:
            params = LoadParams(**msg["params"])
            test_crash("at_load")
            with self.engine.lock:
                loaded, load_ms, reloaded = self.engine.ensure(params, str(msg.get("alias") or ""))
                emit.event(
                    {
                        "ev": "loaded",
                        "id": request_id,
                        "params": asdict(loaded.params),
                        "info": loaded.info.model_dump(mode="json"),
                        "load_ms": load_ms,
                        "reloaded": reloaded,
                        "kv_bytes_measured": loaded.kv_bytes_measured,
                        "kv_log": loaded.kv_log,
                        "loads": self.engine.loads,
                        "reloads": self.engine.reloads,
                    }
                )
                final = self._stream(request_id, loaded, msg, load_ms, reloaded, emit, cancelled)
        except Exception as exc:
            emit.event(error_event(request_id, exc))
            return
        if final is None:
            emit.event({"ev": "cancelled", "id": request_id})
        else:
            emit.event({"ev": "done", "id": request_id, "final": final})

    def _stream(
        self,
        request_id: int,
        loaded: Loaded,
        msg: dict[str, Any],
        load_ms: float | None,
        reloaded: bool,
        emit: Emit,
        cancelled: threading.Event,
    ) -> dict[str, Any] | None:
        llm = loaded.llm
        messages, tools = msg["messages"], msg.get("tools") or None
        tokens = self.engine.prompt_tokens(llm, loaded.formatter, messages, tools)
        n_ctx = int(llm.n_ctx())
        if len(tokens) >= n_ctx:
            raise ContextOverflow(f"the prompt is {len(tokens)} tokens but the loaded context is {n_ctx}")
        window = loaded.info.sliding_window if not loaded.params.swa_full else None
        cached = reusable_prefix(llm, tokens, swa_window=window)
        kwargs = dict(msg.get("kwargs") or {})
        if kwargs.get("max_tokens") is None:
            kwargs["max_tokens"] = n_ctx - len(tokens)
        started = time.perf_counter()
        first: float | None = None
        finish = "stop"
        sent = 0
        stream = llm.create_chat_completion(messages=messages, stream=True, **kwargs)
        try:
            for chunk in stream:
                if cancelled.is_set():
                    return None
                choice = chunk["choices"][0]
                content = (choice.get("delta") or {}).get("content")
                if content:
                    if first is None:
                        first = time.perf_counter()
                    emit.token(request_id, content)
                    sent += 1
                    if sent == 1:
                        test_crash("hang")
                    elif sent == 2:
                        test_crash("mid_stream")
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
        finally:
            with contextlib.suppress(Exception):
                stream.close()
        ended = time.perf_counter()
        completion = max(0, int(llm.n_tokens) - len(tokens)) + (1 if finish == "length" else 0)
        first = first or ended
        prompt_ms = (first - started) * 1000
        load = load_ms or 0.0
        return {
            "finish_reason": finish,
            "first_token": sent > 0,
            "usage": {"prompt_tokens": len(tokens), "completion_tokens": completion, "cached_tokens": cached},
            "timings": {
                "load_ms": load,
                "prompt_ms": prompt_ms,
                "decode_ms": (ended - first) * 1000,
                "ttft_ms": load + prompt_ms,
                "total_ms": load + (ended - started) * 1000,
                "reloaded": reloaded,
            },
        }

    def embed(self, msg: dict[str, Any]) -> dict[str, Any]:
        llm = self.engine.embedder(str(msg["path"]), n_ctx=2048)
        with self.engine.lock:
            data = llm.create_embedding(list(msg["inputs"]))
        vectors = []
        for item in data["data"]:
            vector = [float(v) for v in item["embedding"]]
            norm = sum(v * v for v in vector) ** 0.5 or 1.0
            vectors.append([v / norm for v in vector])
        return {"vectors": vectors, "prompt_tokens": int(data["usage"]["prompt_tokens"])}

    # -- quick answers (the reader thread, concurrent with a generation) -------------------------------------

    def count_tokens(self, msg: dict[str, Any]) -> int:
        """Exactly the tokens ``create_chat_completion`` will evaluate (the same template and tokenizer)."""
        path = str(msg["path"])
        vocab = self.engine.vocab(path)
        with self._formatter_lock:
            if path not in self._formatters:
                from .engine import import_llama

                self._formatters[path] = make_formatter(import_llama(), vocab, self.chat_template)
            formatter = self._formatters[path]
        return len(self.engine.prompt_tokens(vocab, formatter, msg["messages"], msg.get("tools") or None))

    def metadata(self, msg: dict[str, Any]) -> dict[str, Any]:
        return {str(k): str(v) for k, v in dict(self.engine.vocab(str(msg["path"])).metadata).items()}

    def stats(self) -> dict[str, Any]:
        loaded = self.engine.loaded
        return {
            "pid": os.getpid(),
            "rss_bytes": rss_bytes(),
            "loads": self.engine.loads,
            "loaded": asdict(loaded.params) if loaded is not None else None,
        }

    def close(self) -> None:
        self.engine.close()


def rss_bytes() -> int | None:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:
        return None
