"""Does this llama-cpp-python build run on this CPU? One token in a throwaway process tells.

Why a probe and not a CPU-flag check: the broken case is a VM whose CPU *advertises* AVX-512/AMX that it
does not execute, so flags lie; only running the kernels tells. The probe runs the worker module with
``--probe`` on the smallest model at hand (the bundled Gemma 3 270M: ~1 s), once per build (keyed by the
version and the shared libraries' size and mtime) and process; ``autotune doctor`` runs it every time.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from .crashes import FAULTS, REINSTALL, describe

#: models above this size are not loaded just to probe the build (the crash classification still protects)
PROBE_MAX_BYTES = 1 << 30


@dataclass(frozen=True)
class Verdict:
    ok: bool
    #: what went wrong and the fix; or what was checked
    detail: str
    #: False when the probe could not decide (timed out, no small model)
    conclusive: bool = True


@functools.lru_cache(maxsize=1)
def fingerprint() -> str | None:
    """The installed build's identity: a reinstall changes it, so the probe runs again."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    parts = []
    for lib in sorted((root / "lib").glob("*.so*")) + sorted((root / "lib").glob("*.dylib")):
        try:
            stat = lib.stat()
        except OSError:
            continue
        parts.append(f"{lib.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return str(root) + "|" + ",".join(parts)


def probe(model_path: str, *, n_threads: int, timeout: float = 120.0) -> Verdict:
    """Load ``model_path`` and generate one token in a child process; classify how it ended."""
    command = [
        sys.executable,
        "-m",
        "autotune_plugins.backends.llamacpp.worker",
        "--probe",
        model_path,
        "--config",
        json.dumps({"n_threads": n_threads}),
    ]
    try:
        done = subprocess.run(command, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        return Verdict(False, f"the one-token probe did not finish within {timeout:g} s", conclusive=False)
    if done.returncode == 0:
        return Verdict(True, f"one token from {Path(model_path).name} in a throwaway process")
    if done.returncode < 0:
        crash = describe(done.returncode, before_first_token=True)
        # a fault signal is the build; anything else (an OOM kill, a stray SIGTERM) says nothing about it
        return Verdict(False, crash.message, conclusive=crash.signal in FAULTS)
    tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
    return Verdict(
        False,
        f"the one-token probe failed (exit {done.returncode}): {tail[0][:300]}. "
        f"If llama-cpp-python itself is broken: {REINSTALL}",
    )


_verdicts: dict[str, Verdict] = {}
_lock = threading.Lock()


def _store() -> Path:
    from autotune_core.config import data_dir

    return data_dir() / "llamacpp-build.json"


def _load_stored(key: str) -> Verdict | None:
    try:
        data = json.loads(_store().read_text(encoding="utf-8"))
        entry = data.get(key) if isinstance(data, dict) else None
        return Verdict(bool(entry["ok"]), str(entry["detail"])) if isinstance(entry, dict) else None
    except (OSError, ValueError, KeyError):
        return None


def _save(key: str, verdict: Verdict) -> None:
    path = _store()
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        data = data if isinstance(data, dict) else {}
        data[key] = {"ok": verdict.ok, "detail": verdict.detail}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    except (OSError, ValueError):
        pass  # a read-only data folder only means probing again next time


def cached_probe(model_path: str, *, n_threads: int, timeout: float = 120.0) -> Verdict:
    """:func:`probe` once per build (remembered in the data folder and the process); only conclusive
    answers are kept."""
    key = f"{fingerprint()}|{model_path}"
    with _lock:
        verdict = _verdicts.get(key) or _load_stored(key)
        if verdict is None:
            verdict = probe(model_path, n_threads=n_threads, timeout=timeout)
            if verdict.conclusive:
                _save(key, verdict)
        if verdict.conclusive:
            _verdicts[key] = verdict
        return verdict
