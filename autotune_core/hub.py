"""``autotune pull`` from Hugging Face: one GGUF file into the pull cache, resumable and checksum-verified.

Why not ``hf_hub_download``: since huggingface_hub 1.x it downloads into a per-process temporary file and
deletes it on failure, so an interrupted pull (Ctrl-C, a dropped connection that outlasts its retries)
starts again from byte 0 — 400 MB again on a slow line. We use the library for everything else (the
``/api/models`` listing, the ``HEAD /resolve`` metadata with ``X-Repo-Commit`` / ``X-Linked-Etag`` /
``X-Linked-Size``, auth headers, error types, and :func:`huggingface_hub.file_download.http_get`, which
resumes with a ``Range`` request and retries transient failures) and keep the partial file ourselves,
so the next run continues where the last one stopped.

The Hub's checksum is the LFS oid (sha256 of the content, sent as ``X-Linked-Etag``); a small non-LFS file
has a git blob id (sha1 of ``blob <size>\\0<content>``) instead. A download whose digest differs is deleted
and refused.

Cache layout (``$AUTOTUNE_DATA_DIR/models``, else the platform data dir)::

    models/OWNER/REPO/FILE.gguf               the model
    models/OWNER/REPO/FILE.gguf.autotune.json  what was pulled (PullManifest): name, commit, digest, size
    models/OWNER/REPO/FILE.gguf.<digest12>.part  an unfinished download (resumed by the next pull)
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import BaseModel

from .config import data_dir
from .errors import AutotuneError, InvalidRequest
from .model_refs import HubRef, pick_file, quant_of
from .pull_progress import PullEvent

if TYPE_CHECKING:
    from huggingface_hub import HfFileMetadata

MANIFEST_SUFFIX = ".autotune.json"
PART_SUFFIX = ".part"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SHA1 = re.compile(r"^[0-9a-f]{40}$")
#: bytes read per hashing step
_HASH_BLOCK = 1 << 20

ProgressCallback = Callable[[PullEvent], None]


class PullError(AutotuneError):
    """A pull that could not finish: the Hub refused, the connection failed, or the checksum did not match."""

    type = "pull_error"
    status = 502
    code = "pull_failed"


class PullManifest(BaseModel):
    """The sidecar written next to a pulled GGUF; the llamacpp backend's catalog serves models from these."""

    #: the served name, Ollama's form: ``hf.co/OWNER/REPO:QUANT``
    name: str
    repo: str
    file: str
    #: the commit the file was pulled at (``X-Repo-Commit``)
    revision: str
    #: "sha256:<hex>" (LFS oid) or "gitsha1:<hex>" (git blob id)
    digest: str
    size: int
    quant: str | None = None
    #: the friendly alias it was pulled as, if any (also served)
    alias: str | None = None
    pulled_at: str


def pull_dir() -> Path:
    """Where pulled GGUFs live: ``<data dir>/models``."""
    return data_dir() / "models"


def served_name(repo: str, file: str) -> str:
    """``hf.co/OWNER/REPO:QUANT`` (the quant from the file name, else the file's stem), as Ollama names it."""
    return f"hf.co/{repo}:{quant_of(file) or file.rsplit('/', 1)[-1].removesuffix('.gguf')}"


def file_digest(path: Path, kind: str) -> str:
    """``sha256`` of the content, or ``gitsha1`` (the git blob id the Hub uses for non-LFS files)."""
    digest = hashlib.sha256() if kind == "sha256" else hashlib.sha1(usedforsecurity=False)
    if kind == "gitsha1":
        digest.update(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _expected_digest(etag: str | None, lfs_sha256: str | None, url: str) -> tuple[str, str]:
    """(kind, hex) the download must match, from the HEAD etag cross-checked with the listing's LFS oid."""
    etag = (etag or "").strip('"').removeprefix("W/").strip('"').lower()
    if _SHA256.match(etag):
        if lfs_sha256 and lfs_sha256.lower() != etag:
            raise PullError(
                f"the Hub disagrees with itself about {url}: X-Linked-Etag {etag} but LFS oid "
                f"{lfs_sha256}; not downloading"
            )
        return "sha256", etag
    if lfs_sha256 and _SHA256.match(lfs_sha256.lower()):
        return "sha256", lfs_sha256.lower()
    if _SHA1.match(etag):
        return "gitsha1", etag
    raise PullError(f"{url} has no checksum (ETag {etag or 'missing'}); refusing a download that cannot be verified")


def _bar_class(on_event: ProgressCallback | None, digest: str) -> type[Any]:
    """A tqdm look-alike for ``http_get`` that reports bytes as :class:`PullEvent` (the CLI draws them)."""

    class Bar:
        def __init__(self, *, total: int | None = None, initial: int = 0, desc: str = "", **_: Any) -> None:
            self.total, self.n, self.desc = total, initial, desc
            self._emit()

        def _emit(self) -> None:
            if on_event is not None:
                on_event(PullEvent(status=f"pulling {self.desc}", digest=digest, total=self.total, completed=self.n))

        def update(self, n: int | float = 1) -> None:
            self.n += int(n)
            self._emit()

        def close(self) -> None:
            pass

        def __enter__(self) -> Bar:
            return self

        def __exit__(self, *exc: object) -> None:
            self.close()

    return Bar


def _same_origin(a: str, b: str) -> bool:
    first, second = urlsplit(a), urlsplit(b)
    return (first.scheme, first.hostname, first.port) == (second.scheme, second.hostname, second.port)


def _read_manifest(path: Path) -> PullManifest | None:
    with contextlib.suppress(OSError, ValueError):
        return PullManifest.model_validate_json(path.read_text(encoding="utf-8"))
    return None


def _write_manifest(path: Path, manifest: PullManifest) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
    tmp.replace(path)


def _hub_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import HfHubHTTPError

    errors: tuple[type[BaseException], ...] = (HfHubHTTPError, OSError)
    with contextlib.suppress(ImportError):
        import httpx2  # huggingface_hub 2.x's HTTP client: its transport errors

        errors += (httpx2.HTTPError,)
    return errors


def _describe(exc: BaseException, ref: HubRef) -> str:
    from huggingface_hub.errors import GatedRepoError, RemoteEntryNotFoundError, RepositoryNotFoundError

    if isinstance(exc, GatedRepoError):
        return f"{ref.repo} is gated: accept its licence on the Hub, then log in (`hf auth login`) or set HF_TOKEN"
    if isinstance(exc, RepositoryNotFoundError):
        return f"no repository {ref.repo} on the Hub (or it is private: log in or set HF_TOKEN)"
    if isinstance(exc, RemoteEntryNotFoundError):
        return f"{ref.repo} has no file {ref.file!r}"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{type(exc).__name__}: {first}"


def _already_there(dest: Path, wanted: PullManifest, kind: str, emit: ProgressCallback) -> PullManifest | None:
    """The manifest if ``dest`` already holds the wanted content (its manifest says so, or its digest does)."""
    manifest_path = dest.with_name(dest.name + MANIFEST_SUFFIX)
    if not dest.is_file():
        return None
    previous = _read_manifest(manifest_path)
    if previous is not None and previous.digest == wanted.digest and dest.stat().st_size == previous.size:
        emit(PullEvent(status="up to date", digest=wanted.digest, total=previous.size, completed=previous.size))
        if wanted.alias and previous.alias != wanted.alias:
            previous = previous.model_copy(update={"alias": wanted.alias})
            _write_manifest(manifest_path, previous)
        emit(PullEvent(status="success"))
        return previous
    if wanted.size and dest.stat().st_size == wanted.size and f"{kind}:{file_digest(dest, kind)}" == wanted.digest:
        _write_manifest(manifest_path, wanted)  # already there (copied in, or its manifest was lost)
        emit(PullEvent(status="success"))
        return wanted
    return None


def _check_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise PullError(
            f"not enough disk space in {folder}: the download needs {needed / 2**20:.0f} MiB more, "
            f"{free / 2**20:.0f} MiB are free"
        )


def list_repo_files(ref: HubRef, *, endpoint: str | None, token: str | bool | None) -> dict[str, str | None]:
    """file name -> LFS sha256 (None for non-LFS files), from ``GET /api/models/OWNER/REPO?blobs=true``."""
    from huggingface_hub import HfApi

    try:
        info = HfApi(endpoint=endpoint, token=token).model_info(ref.repo, revision=ref.revision, files_metadata=True)
    except _hub_errors() as exc:
        raise PullError(f"listing {ref.repo} failed: {_describe(exc, ref)}") from None
    return {s.rfilename: (s.lfs.sha256 if s.lfs else None) for s in info.siblings or []}


def _resolve_file(
    ref: HubRef, *, endpoint: str | None, token: str | bool | None
) -> tuple[HubRef, str, dict[str, str | None]]:
    """``ref`` with its file named (picked from the repo's listing when it named none), the file, the listing.

    The listing's LFS oids are kept: they are the checksum when the HEAD answer carries no linked etag.
    """
    if ref.file is not None:
        return ref, ref.file, {}
    lfs_oids = list_repo_files(ref, endpoint=endpoint, token=token)
    try:
        file = pick_file(ref, list(lfs_oids))
    except InvalidRequest as exc:
        raise PullError(exc.message) from None
    return HubRef(repo=ref.repo, file=file, quant=ref.quant, revision=ref.revision, alias=ref.alias), file, lfs_oids


def _cache_path(root: Path, repo: str, file: str) -> Path:
    """Where ``repo``/``file`` goes in the cache; refused if a crafted name would write outside it."""
    dest = root / repo / file
    if ".." in Path(repo, file).parts or not dest.resolve().is_relative_to(root.resolve()):
        raise PullError(f"refusing {repo}/{file}: the name would leave the pull cache {root}")
    return dest


def _file_metadata(url: str, ref: HubRef, *, endpoint: str | None, token: str | bool | None) -> HfFileMetadata:
    """The Hub's HEAD answer for ``url``; a server that is not the Hub (no ``X-Repo-Commit``) is refused."""
    from huggingface_hub import get_hf_file_metadata

    try:
        meta = get_hf_file_metadata(url, token=token, endpoint=endpoint)
    except _hub_errors() as exc:
        raise PullError(f"{ref.repo}/{ref.file}: {_describe(exc, ref)}") from None
    if not meta.commit_hash:
        raise PullError(
            f"{url} answered without X-Repo-Commit: that is not a Hugging Face Hub endpoint "
            "(check HF_ENDPOINT and any proxy)"
        )
    return meta


def _resume_offset(dest: Path, part: Path, size: int | None) -> int:
    """Bytes of ``part`` to keep; partial files of other revisions, and a part longer than the file, go."""
    for stale in dest.parent.glob(f"{dest.name}.*{PART_SUFFIX}"):
        if stale != part:  # an unfinished download of an older revision of this file
            stale.unlink(missing_ok=True)
    resume = part.stat().st_size if part.exists() else 0
    if size is not None and resume > size:
        part.unlink()
        resume = 0
    return resume


def _download(
    meta: HfFileMetadata, dest: Path, part: Path, ref: HubRef, *, headers: dict[str, str], bar: type[Any]
) -> None:
    """Append the rest of ``dest`` to ``part`` (a ``Range`` request when some of it is there already)."""
    from huggingface_hub.file_download import http_get

    size = meta.size
    resume = _resume_offset(dest, part, size)
    if size is not None and resume >= size:
        return
    _check_space(part.parent, (size or 0) - resume)
    try:
        with part.open("ab") as handle:
            http_get(
                meta.location,
                handle,
                resume_size=resume,
                headers=headers,
                expected_size=size,
                displayed_filename=ref.file,
                tqdm_class=bar,
            )
    except _hub_errors() as exc:
        kept = part.stat().st_size if part.exists() else 0
        raise PullError(
            f"downloading {ref.repo}/{ref.file} stopped at {kept} of {size or '?'} bytes: "
            f"{_describe(exc, ref)}; run the same pull again to resume"
        ) from None


def _install(
    part: Path, dest: Path, manifest: PullManifest, kind: str, expected: str, emit: ProgressCallback
) -> PullManifest:
    """Move a verified download into place with its manifest; a download whose digest differs is deleted."""
    emit(PullEvent(status=f"verifying {kind} digest", digest=manifest.digest))
    got = file_digest(part, kind)
    if got != expected:
        part.unlink(missing_ok=True)
        raise PullError(
            f"checksum mismatch for {manifest.repo}/{manifest.file}: the Hub says {kind} {expected}, "
            f"the download is {got}; it was deleted (run the pull again)"
        )
    os.replace(part, dest)
    emit(PullEvent(status="writing manifest", digest=manifest.digest))
    manifest = manifest.model_copy(update={"size": dest.stat().st_size})
    _write_manifest(dest.with_name(dest.name + MANIFEST_SUFFIX), manifest)
    return manifest


def pull_gguf(
    ref: HubRef,
    *,
    root: Path | None = None,
    endpoint: str | None = None,
    token: str | bool | None = None,
    on_event: ProgressCallback | None = None,
) -> PullManifest:
    """Download (or resume, or confirm) one GGUF of ``ref`` into the pull cache; returns its manifest."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import (  # type: ignore[attr-defined]  # public, but exported lazily
        WeakFileLock,
        build_hf_headers,
    )

    emit = on_event or (lambda event: None)
    root = root or pull_dir()
    emit(PullEvent(status="pulling manifest"))
    ref, file, lfs_oids = _resolve_file(ref, endpoint=endpoint, token=token)
    dest = _cache_path(root, ref.repo, file)
    url = hf_hub_url(ref.repo, file, revision=ref.revision, endpoint=endpoint)
    meta = _file_metadata(url, ref, endpoint=endpoint, token=token)
    kind, expected = _expected_digest(meta.etag, lfs_oids.get(file), url)
    digest = f"{kind}:{expected}"
    manifest = PullManifest(
        name=served_name(ref.repo, file),
        repo=ref.repo,
        file=file,
        revision=meta.commit_hash,
        digest=digest,
        size=meta.size or 0,
        quant=quant_of(file),
        alias=ref.alias,
        pulled_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    )
    dest.parent.mkdir(parents=True, exist_ok=True)
    done = _already_there(dest, manifest, kind, emit)
    if done is not None:
        return done
    part = dest.with_name(f"{dest.name}.{expected[:12]}{PART_SUFFIX}")
    headers = build_hf_headers(token=token)
    if not _same_origin(url, meta.location):
        headers.pop("authorization", None)  # a CDN's signed URL needs no token; keep it on the Hub
    with WeakFileLock(str(part) + ".lock"):
        done = _already_there(dest, manifest, kind, emit)  # another pull of this file finished meanwhile
        if done is not None:
            return done
        _download(meta, dest, part, ref, headers=headers, bar=_bar_class(on_event, digest))
        manifest = _install(part, dest, manifest, kind, expected, emit)
    with contextlib.suppress(OSError):
        Path(str(part) + ".lock").unlink()
    emit(PullEvent(status="success"))
    return manifest
