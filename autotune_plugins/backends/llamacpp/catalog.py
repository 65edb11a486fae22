"""Models pulled with ``autotune pull`` (the pull cache), as the embedded backend lists and resolves them.

A pulled model is served under Ollama's name for it, ``hf.co/OWNER/REPO:QUANT``, plus ``OWNER/REPO:QUANT``
and the alias it was pulled as (``gemma3-270m-it``). Only files whose manifest says the download finished
and verified are served (see :mod:`autotune_core.hub`); an unfinished ``.part`` is never listed.

Kept apart from the backend so the engine's process model can change without touching discovery.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from autotune_core.hub import MANIFEST_SUFFIX, PullManifest, pull_dir
from autotune_core.messages import ModelEntry
from autotune_core.model_refs import ALIASES, SUGGESTED_ALIAS

#: said wherever the bundled Gemma 3 270M is listed or shown (autotune models, /api/show)
BASE_NOTE = (
    f"base model (not instruction-tuned): it completes text but does not follow chat turns; meant for "
    f"smoke tests. To chat, pull a small instruct GGUF: `autotune pull {SUGGESTED_ALIAS}` "
    f"({ALIASES[SUGGESTED_ALIAS].repo})"
)


@dataclass(frozen=True)
class PulledModel:
    name: str
    aliases: tuple[str, ...]
    path: str
    manifest: PullManifest

    def entry(self, backend: str) -> ModelEntry:
        manifest = self.manifest
        digest = manifest.digest.split(":", 1)[-1]
        return ModelEntry(
            name=self.name,
            backend=backend,
            size_bytes=manifest.size,
            quantization=manifest.quant,
            modified_at=manifest.pulled_at,
            digest=digest,
            aliases=list(self.aliases),
        )


def pulled_models(root: Path | None = None) -> list[PulledModel]:
    """Every finished pull under ``root`` (default: the pull cache), sorted by name.

    Two files of one repository with the same quant (``--file`` pulls both) would share a name: the second
    in path order is served as ``hf.co/OWNER/REPO:FILE-STEM`` instead.
    """
    root = root or pull_dir()
    if not root.is_dir():
        return []
    out: list[PulledModel] = []
    taken: set[str] = set()
    for sidecar in sorted(root.rglob("*.gguf" + MANIFEST_SUFFIX)):
        with contextlib.suppress(OSError, ValueError):
            manifest = PullManifest.model_validate_json(sidecar.read_text(encoding="utf-8"))
            path = sidecar.with_name(sidecar.name.removesuffix(MANIFEST_SUFFIX))
            if not path.is_file() or path.stat().st_size != manifest.size:
                continue  # deleted or replaced by hand: not what was verified
            if manifest.name.lower() in taken:
                stem = manifest.file.rsplit("/", 1)[-1].removesuffix(".gguf")
                manifest = manifest.model_copy(update={"name": f"hf.co/{manifest.repo}:{stem}"})
            taken.add(manifest.name.lower())
            short = manifest.name.removeprefix("hf.co/")
            aliases = tuple(a for a in (short, manifest.alias) if a and a != manifest.name)
            out.append(PulledModel(name=manifest.name, aliases=aliases, path=str(path), manifest=manifest))
    return sorted(out, key=lambda m: m.name)


#: seconds a scan answers name lookups (each request resolves its model; a scan costs ~0.2-0.6 ms)
SCAN_TTL = 2.0
_scans: dict[Path, tuple[float, dict[str, PulledModel]]] = {}
_scans_lock = threading.Lock()


def _by_name(root: Path, *, fresh: bool) -> dict[str, PulledModel]:
    with _scans_lock:
        cached = _scans.get(root)
        if not fresh and cached is not None and time.monotonic() < cached[0]:
            return cached[1]
        table = {name.lower(): m for m in pulled_models(root) for name in (m.name, *m.aliases)}
        _scans[root] = (time.monotonic() + SCAN_TTL, table)
        return table


def find_pulled(model: str, root: Path | None = None) -> PulledModel | None:
    """The pulled model named ``model`` (its name or an alias, case-insensitive), else None.

    Answers from a scan at most :data:`SCAN_TTL` old; a name it does not know, or a file gone since,
    rescans at once (so a model pulled a moment ago resolves on its first request).
    """
    wanted = model.strip().lower()
    if not wanted:
        return None
    root = root or pull_dir()
    found = _by_name(root, fresh=False).get(wanted)
    if found is None or not Path(found.path).is_file():
        found = _by_name(root, fresh=True).get(wanted)
    return found
