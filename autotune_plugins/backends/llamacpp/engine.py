"""The worker process's engine: one ``llama_cpp.Llama`` at a time, loads, KV measurement, tokenizers.

Runs inside the worker (``worker.py``), serialised by :attr:`Engine.lock` (a ``Llama`` holds one sequence
and is not thread-safe). Keep-alive lives in the server (``supervisor.py``): unloading ends the whole
process. ``llama_cpp`` is imported lazily so the plugin imports without it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from autotune_core.modelinfo import ModelInfo

#: GGML type ids (llama_cpp.GGML_TYPE_*), by the names autotune uses for KV types
GGML_TYPES: dict[str, str] = {
    "f32": "GGML_TYPE_F32",
    "f16": "GGML_TYPE_F16",
    "bf16": "GGML_TYPE_BF16",
    "q8_0": "GGML_TYPE_Q8_0",
    "q5_1": "GGML_TYPE_Q5_1",
    "q5_0": "GGML_TYPE_Q5_0",
    "q4_1": "GGML_TYPE_Q4_1",
    "q4_0": "GGML_TYPE_Q4_0",
    "iq4_nl": "GGML_TYPE_IQ4_NL",
}
UNQUANTIZED = frozenset({"f32", "f16", "bf16"})

#: Gemma 3's chat template (system text joins the first user turn), for GGUFs that ship without one
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else 'user' -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ (message['content'] or '') | trim }}{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)
BUILTIN_TEMPLATES: dict[str, str] = {"gemma3": GEMMA_TEMPLATE, "gemma2": GEMMA_TEMPLATE, "gemma": GEMMA_TEMPLATE}

_KV_LINE = re.compile(r"llama_kv_cache: size =\s*([\d.]+) MiB \(\s*(\d+) cells,\s*(\d+) layers")
_log_lock = threading.Lock()


def import_llama() -> Any:
    """``llama_cpp`` or ImportError with the reason (kept lazy: the plugin must import without it)."""
    import llama_cpp

    return llama_cpp


def physical_cores() -> int:
    try:
        import psutil

        cores = psutil.cpu_count(logical=False)
    except Exception:
        cores = None
    return max(1, cores or (os.cpu_count() or 2) // 2)


@dataclass(frozen=True)
class LoadParams:
    """The at-load knobs: a change in any of them means a new ``Llama`` (a reload)."""

    path: str
    n_ctx: int
    kv_type: str = "f16"
    flash_attn: bool = False
    n_batch: int = 512
    n_ubatch: int = 512
    swa_full: bool = False


@dataclass
class Loaded:
    llm: Any
    params: LoadParams
    info: ModelInfo
    formatter: Any
    load_ms: float
    #: KV bytes llama.cpp reported allocating (sum of its "llama_kv_cache: size" lines), None if not seen
    kv_bytes_measured: int | None
    kv_log: list[str] = field(default_factory=list)


def _capture_log(llama_cpp: Any, lines: list[str]) -> Any:
    @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
    def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        with contextlib.suppress(Exception):
            lines.append(text.decode("utf-8", "replace"))

    return callback


def measured_kv_bytes(lines: list[str]) -> int | None:
    sizes = [float(m.group(1)) for m in (_KV_LINE.search(line) for line in lines) if m]
    return round(sum(sizes) * 1024 * 1024) if sizes else None


def model_info_from(name: str, metadata: dict[str, Any], path: str) -> ModelInfo:
    info = ModelInfo.from_gguf(name, metadata)
    with contextlib.suppress(OSError):
        info.size_bytes = os.path.getsize(path)
    file_type = metadata.get("general.file_type")
    info.quantization = _FILE_TYPES.get(str(file_type)) if file_type is not None else None
    info.family = info.architecture
    return info


_FILE_TYPES = {
    "0": "F32",
    "1": "F16",
    "2": "Q4_0",
    "3": "Q4_1",
    "7": "Q8_0",
    "8": "Q5_0",
    "9": "Q5_1",
    "10": "Q2_K",
    "12": "Q3_K_M",
    "14": "Q4_K_S",
    "15": "Q4_K_M",
    "16": "Q5_K_S",
    "17": "Q5_K_M",
    "18": "Q6_K",
    "32": "BF16",
}


def make_formatter(llama_cpp: Any, llm: Any, chat_template: str | None) -> Any:
    """The Jinja formatter llama-cpp-python would build, from the GGUF template or our built-in one."""
    from llama_cpp import llama_chat_format

    metadata = llm.metadata
    arch = str(metadata.get("general.architecture", ""))
    template = chat_template or metadata.get("tokenizer.chat_template") or BUILTIN_TEMPLATES.get(arch)
    if not template:
        return None
    vocab = llm._model.vocab
    eos_id, bos_id = llm.token_eos(), llm.token_bos()
    eos = llm._model.token_get_text(eos_id) if eos_id != -1 else ""
    bos = llm._model.token_get_text(bos_id) if bos_id != -1 else ""
    del vocab
    return llama_chat_format.Jinja2ChatFormatter(
        template=template, eos_token=eos, bos_token=bos, stop_token_ids=[eos_id]
    )


class Engine:
    """One model instance, serialised; counts loads and reloads and measures each (re)load."""

    def __init__(self, *, n_threads: int, verbose: bool, chat_template: str | None = None) -> None:
        self.lock = threading.Lock()
        self.loaded: Loaded | None = None
        self.n_threads = n_threads
        self.verbose = verbose
        self.chat_template = chat_template
        self.loads = 0
        self.reloads = 0
        self.last_reload_ms: float | None = None
        self._vocab: dict[str, Any] = {}
        self._vocab_lock = threading.Lock()
        self._embedder: tuple[str, Any] | None = None

    # -- loading (call with self.lock held) --------------------------------------------------------------

    def ensure(self, params: LoadParams, name: str) -> tuple[Loaded, float | None, bool]:
        """The loaded model for ``params``: (loaded, load_ms if this call loaded it, whether it reloaded)."""
        current = self.loaded
        if current is not None and current.params == params:
            return current, None, False
        reload = current is not None and current.params.path == params.path
        self.unload_locked()
        loaded = self._load(params, name)
        self.loaded = loaded
        self.loads += 1
        if reload:
            self.reloads += 1
            self.last_reload_ms = loaded.load_ms
        return loaded, loaded.load_ms, reload

    def _load(self, params: LoadParams, name: str) -> Loaded:
        llama_cpp = import_llama()
        kwargs: dict[str, Any] = dict(
            model_path=params.path,
            n_ctx=params.n_ctx,
            n_batch=params.n_batch,
            n_ubatch=params.n_ubatch,
            n_threads=self.n_threads,
            n_threads_batch=self.n_threads,
            flash_attn=params.flash_attn,
            swa_full=params.swa_full,
            verbose=self.verbose,
            n_gpu_layers=0,
        )
        if params.kv_type != "f16":
            kind = getattr(llama_cpp, GGML_TYPES[params.kv_type])
            kwargs.update(type_k=kind, type_v=kind)
        lines: list[str] = []
        started = time.perf_counter()
        with _log_lock:
            callback = _capture_log(llama_cpp, lines)
            llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
            try:
                llm = llama_cpp.Llama(**kwargs)
            finally:
                from llama_cpp import _logger

                llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
        load_ms = (time.perf_counter() - started) * 1000
        formatter = make_formatter(llama_cpp, llm, self.chat_template)
        if formatter is not None:
            llm.chat_handler = formatter.to_chat_handler()
        info = model_info_from(name, dict(llm.metadata), params.path)
        kv_lines = [line.strip() for line in lines if "llama_kv_cache: size" in line]
        return Loaded(
            llm=llm,
            params=params,
            info=info,
            formatter=formatter,
            load_ms=load_ms,
            kv_bytes_measured=measured_kv_bytes(lines),
            kv_log=kv_lines,
        )

    def unload_locked(self) -> bool:
        loaded, self.loaded = self.loaded, None
        if loaded is None:
            return False
        with contextlib.suppress(Exception):
            loaded.llm.close()
        return True

    def unload(self) -> bool:
        with self.lock:
            return self.unload_locked()

    # -- tokens ----------------------------------------------------------------------------------------------

    def vocab(self, path: str) -> Any:
        """A vocab-only ``Llama`` per file, for metadata and token counts without loading weights."""
        with self._vocab_lock:
            llm = self._vocab.get(path)
            if llm is None:
                llama_cpp = import_llama()
                llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=self.verbose)
                self._vocab[path] = llm
            return llm

    def prompt_tokens(
        self, llm: Any, formatter: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
    ) -> list[int]:
        """Exactly the tokens ``create_chat_completion`` will evaluate (same formatter, same tokenizer call)."""
        if formatter is None:
            text = "".join(f"{m.get('role')}: {m.get('content') or ''}\n" for m in messages)
            return list(llm.tokenize(text.encode("utf-8"), add_bos=True, special=True))
        result = formatter(messages=messages, tools=tools or None)
        return list(llm.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True))

    # -- embeddings --------------------------------------------------------------------------------------------

    def embedder(self, path: str, n_ctx: int) -> Any:
        if self._embedder is None or self._embedder[0] != path:
            llama_cpp = import_llama()
            llm = llama_cpp.Llama(
                model_path=path,
                embedding=True,
                n_ctx=n_ctx,
                n_threads=self.n_threads,
                verbose=self.verbose,
                swa_full=False,
                pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
            )
            self._embedder = (path, llm)
        return self._embedder[1]

    def close(self) -> None:
        with self.lock:
            self.unload_locked()
            if self._embedder is not None:
                with contextlib.suppress(Exception):
                    self._embedder[1].close()
                self._embedder = None
        with self._vocab_lock:
            for llm in self._vocab.values():
                with contextlib.suppress(Exception):
                    llm.close()
            self._vocab.clear()


def reusable_prefix(llm: Any, tokens: list[int], *, swa_window: int | None) -> int:
    """Tokens llama-cpp-python will reuse from its KV cache for this prompt (its LCP rule).

    With a sliding-window cache that is not full size, the window below the cut point may already be
    evicted; llama.cpp's server then re-processes the whole prompt, and so do we (``llm.reset()``), since
    llama-cpp-python would otherwise attend over missing cells.
    """
    n_past = int(llm.n_tokens)
    if n_past <= 0 or not tokens:
        return 0
    previous = llm._input_ids[:n_past]
    lcp = 0
    for a, b in zip(previous, tokens, strict=False):
        if a != b:
            break
        lcp += 1
    reuse = lcp - 1 if lcp == len(tokens) else lcp
    if reuse <= 0:
        return 0
    if swa_window and reuse < n_past:
        llama_cpp = import_llama()
        memory = llama_cpp.llama_get_memory(llm.ctx)
        pos_min = int(llama_cpp.llama_memory_seq_pos_min(memory, 0))
        if pos_min > max(0, reuse - swa_window):
            llm.reset()
            return 0
    return reuse
