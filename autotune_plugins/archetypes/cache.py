"""The local profile cache: a downloaded set kept under ``data_dir()/archetypes/`` with its version,
refreshed from ``[archetypes] url`` every ``refresh_hours``, and the user's ``local.toml`` overlay.

A download replaces the cache only if it parses, validates, has our ``schema_version`` and a
*newer* version than the cached one; the write is atomic (temp file + rename), so a bad, stale or
interrupted download never replaces a good cache. Offline, the bundled set is simply used.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from autotune_core.archetypes import ProfileSet, ProfileSetError, dump_profile_set, load_profile_set
from autotune_core.config import data_dir
from autotune_core.errors import ConfigError

log = logging.getLogger("autotune.archetypes")

REMOTE_FILE = "remote.json"
META_FILE = "remote.meta.json"
LOCAL_FILE = "local.toml"
#: a profile set is a few hundred KB at most; refuse anything far bigger
MAX_DOWNLOAD_BYTES = 4 * 1024 * 1024


class ArchetypesConfig(BaseModel):
    """``[archetypes]`` in the config file."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = None
    refresh_hours: float = Field(default=24.0, gt=0)
    timeout: float = Field(default=10.0, gt=0, le=120)


def archetypes_config(raw: dict[str, Any]) -> ArchetypesConfig:
    try:
        return ArchetypesConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"archetypes.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid [archetypes] configuration: {problems}") from None


@dataclass
class RefreshResult:
    """What a refresh did: ``updated``, ``unchanged`` (same version), or ``rejected``/``offline``."""

    status: str
    message: str
    version: int | None = None


def atomic_write(path: Path, text: str) -> None:
    """Write via a temp file in the same folder and rename: readers see the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ProfileCache:
    """Reads and writes the cache folder (``data_dir()/archetypes`` unless given)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else data_dir() / "archetypes"

    @property
    def local_path(self) -> Path:
        return self.root / LOCAL_FILE

    def meta(self) -> dict[str, Any]:
        try:
            data = json.loads((self.root / META_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    def cached(self) -> ProfileSet | None:
        """The cached downloaded set, or None when absent or unreadable (then it is ignored)."""
        path = self.root / REMOTE_FILE
        if not path.exists():
            return None
        try:
            return load_profile_set(path.read_text(encoding="utf-8"), origin=str(path), fmt="json")
        except (OSError, ProfileSetError) as exc:
            log.warning("ignoring the archetype profile cache: %s", exc)
            return None

    def local(self) -> ProfileSet | None:
        """The user's local overlay (``local.toml``), validated like any other set."""
        if not self.local_path.exists():
            return None
        return load_profile_set(self.local_path.read_text(encoding="utf-8"), origin=str(self.local_path), fmt="toml")

    def stale(self, refresh_hours: float, now: float | None = None) -> bool:
        fetched = self.meta().get("checked_at")
        return not isinstance(fetched, int | float) or (now or time.time()) - fetched > refresh_hours * 3600

    def accept(self, payload: bytes, url: str) -> RefreshResult:
        """Validate a downloaded payload and, if it is newer, make it the cache."""
        try:
            candidate = load_profile_set(payload, origin=url, fmt="json")
        except ProfileSetError as exc:
            return RefreshResult("rejected", f"download rejected, cache kept: {exc.message}")
        current = self.cached()
        self._write_meta(url, current.version if current else None, checked=True)
        if current is not None and candidate.version < current.version:
            return RefreshResult(
                "rejected",
                f"download rejected, cache kept: {url} serves version "
                f"{candidate.version}, older than the cached {current.version}",
                current.version,
            )
        if current is not None and candidate.version == current.version:
            return RefreshResult("unchanged", f"cache is current (version {current.version})", current.version)
        atomic_write(self.root / REMOTE_FILE, json.dumps(dump_profile_set(candidate), indent=1))
        self._write_meta(url, candidate.version, checked=True)
        return RefreshResult(
            "updated", f"profiles updated to {candidate.name} version {candidate.version}", candidate.version
        )

    def _write_meta(self, url: str, version: int | None, *, checked: bool) -> None:
        meta = {**self.meta(), "url": url, "version": version}
        if checked:
            meta["checked_at"] = time.time()
        atomic_write(self.root / META_FILE, json.dumps(meta))

    def refresh(self, url: str, *, timeout: float = 10.0) -> RefreshResult:
        """Download ``url`` (bounded in time and size) and :meth:`accept` it; offline is not an error."""
        try:
            with httpx.Client(timeout=timeout, follow_redirects=True) as client, client.stream("GET", url) as resp:
                if resp.status_code != 200:
                    return RefreshResult("rejected", f"download rejected, cache kept: HTTP {resp.status_code}")
                chunks: list[bytes] = []
                size = 0
                for chunk in resp.iter_bytes():
                    size += len(chunk)
                    if size > MAX_DOWNLOAD_BYTES:
                        return RefreshResult(
                            "rejected", f"download rejected, cache kept: larger than {MAX_DOWNLOAD_BYTES} bytes"
                        )
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            return RefreshResult("offline", f"cannot reach {url} ({type(exc).__name__}); using cached/bundled")
        return self.accept(b"".join(chunks), url)
