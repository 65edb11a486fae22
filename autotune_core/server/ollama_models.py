"""The Ollama door's model metadata: ``/api/tags``, ``/api/show``, ``/api/ps`` and ``/api/version``.

For models an Ollama serves, its own JSON passes through verbatim (every field, known to us or not) with
autotune's additions under ``"autotune"``; for other backends we fill what can be known honestly and leave out
what cannot (a client sizes things from these: a 0 would be a lie).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..messages import ModelEntry
from ..modelinfo import ModelInfo
from . import ollama_wire as wire
from .errors import validate
from .exchange import error_response, ok, read_json
from .state import ServerState

#: reported by /api/version when no Ollama upstream tells us its own (clients gate features on it)
OLLAMA_COMPAT_VERSION = "0.30.0"


def _param_size(count: int | None) -> str:
    if not count:
        return ""
    if count >= 1_000_000_000:
        return f"{count / 1e9:.1f}B"
    return f"{count / 1e6:.0f}M"


def _details(entry: ModelEntry | None, info: ModelInfo | None = None) -> dict[str, Any]:
    family = (
        (entry.family if entry else None)
        or (info.family if info else None)
        or (info.architecture if info and info.architecture != "unknown" else "")
    )
    return {
        "parent_model": "",
        "format": "gguf",
        "family": family or "",
        "families": [family] if family else None,
        "parameter_size": (entry.parameter_size if entry else None)
        or _param_size(info.parameter_count if info else None),
        "quantization_level": (entry.quantization if entry else None) or (info.quantization if info else "") or "",
    }


def _digest(entry: ModelEntry) -> str:
    return entry.digest or hashlib.sha256(f"{entry.backend}/{entry.name}".encode()).hexdigest()


def _note_line(entry: ModelEntry | None) -> str:
    """A modelfile comment with what the backend says users should know (e.g. "base model, not for chat")."""
    return f"# note: {entry.note}\n" if entry is not None and entry.note else ""


def _model_info(info: ModelInfo | None) -> tuple[dict[str, Any], list[str]]:
    """``model_info`` and ``capabilities`` from what the backend told us; unknown values are left out."""
    if info is None:
        return {}, ["completion"]
    arch = info.architecture
    known = {
        "general.parameter_count": info.parameter_count,
        f"{arch}.block_count": info.block_count,
        f"{arch}.context_length": info.context_length,
        f"{arch}.embedding_length": info.embedding_length,
        f"{arch}.attention.head_count": info.head_count,
        f"{arch}.attention.head_count_kv": info.head_count_kv,
        f"{arch}.attention.sliding_window": info.sliding_window,
    }
    return (
        {"general.architecture": arch, **{key: value for key, value in known.items() if value}},
        list(info.capabilities) or ["completion"],
    )


async def tags(state: ServerState, started_iso: str, request: Request) -> Response:
    entries = await state.pipeline.resolver.all_models()
    models = []
    seen: set[str] = set()
    for entry in entries:
        if entry.name in seen:
            continue
        seen.add(entry.name)
        if entry.upstream is not None:  # an Ollama's own entry: every field, verbatim
            models.append({**entry.upstream, "autotune": {"backend": entry.backend}})
            continue
        models.append(
            {
                "name": entry.name,
                "model": entry.name,
                "modified_at": entry.modified_at or started_iso,
                "size": entry.size_bytes or 0,
                "digest": _digest(entry),
                "details": _details(entry),
                "autotune": {"backend": entry.backend},
            }
        )
    return ok(state, "ollama", "/api/tags", {"models": models})


async def show(state: ServerState, started_iso: str, request: Request) -> Response:
    try:
        body = validate(wire.ModelNameBody, await read_json(request, state.config.max_body_bytes))
        name = body.target()
        backend, upstream = await state.resolve(name)
        native = await backend.native_show(upstream, verbose=bool((body.model_extra or {}).get("verbose")))
        if native is not None:  # an Ollama behind us: its own answer, every field, plus ours under "autotune"
            return ok(
                state, "ollama", "/api/show", {**native, "autotune": {"backend": backend.name, "model": upstream}}
            )
        info = await state.pipeline.model_info(backend, upstream)
    except Exception as exc:
        return error_response(state, "ollama", "/api/show", exc)
    entry = next((e for e in await state.pipeline.resolver.models_of(backend.name) if e.name == upstream), None)
    model_info, capabilities = _model_info(info)
    return ok(
        state,
        "ollama",
        "/api/show",
        {
            "modelfile": f"# served by autotune via the {backend.name} backend\n{_note_line(entry)}FROM {upstream}\n",
            "parameters": "",
            "template": "",
            "details": _details(entry, info),
            "model_info": model_info,
            "capabilities": capabilities,
            "modified_at": (entry.modified_at if entry else None) or started_iso,
            "autotune": {"backend": backend.name, "model": upstream},
        },
    )


async def ps(state: ServerState, started_iso: str, request: Request) -> Response:
    models: list[dict[str, Any]] = []
    for name in state.pipeline.resolver.candidates():
        if name not in state.backends_used and not (state.status.get(name) and state.status[name].ok):
            continue
        with contextlib.suppress(Exception):
            loaded_models = await asyncio.wait_for(state.host.backend(name).loaded_models(), 3.0)
            listed = {entry.name: entry for entry in await state.pipeline.resolver.models_of(name)}
            for loaded in loaded_models:
                if loaded.upstream is not None:  # an Ollama's own entry, verbatim
                    models.append({**loaded.upstream, "autotune": {"backend": name}})
                    continue
                entry = listed.get(loaded.name)
                models.append(
                    {
                        "name": loaded.name,
                        "model": loaded.name,
                        "size": loaded.size_bytes or 0,
                        "size_vram": loaded.size_vram_bytes or 0,
                        "digest": _digest(entry or ModelEntry(name=loaded.name, backend=name)),
                        "details": _details(entry),
                        "expires_at": loaded.expires_at or started_iso,
                        "context_length": loaded.context_length,
                        "autotune": {"backend": name},
                    }
                )
    return ok(state, "ollama", "/api/ps", {"models": models})


async def version(state: ServerState, started_iso: str, request: Request) -> Response:
    found = OLLAMA_COMPAT_VERSION
    status = state.status.get("ollama")
    if status is not None and status.ok and status.version:
        found = status.version
    from .. import __version__

    return ok(state, "ollama", "/api/version", {"version": found, "autotune": __version__})
