"""A stand-in for the Hugging Face Hub on 127.0.0.1, serving files the way the Hub does (for ``autotune pull``).

What it models (what ``huggingface_hub`` calls and reads):

* ``GET /api/models/OWNER/REPO`` and ``.../revision/REV`` (``?blobs=true``): ``id``, ``sha`` and ``siblings``
  with ``rfilename``, ``size``, ``blobId`` and, for LFS files, ``lfs: {sha256, size, pointerSize}``.
* ``HEAD``/``GET /OWNER/REPO/resolve/REV/FILE``: ``X-Repo-Commit`` always; an LFS file (``*.gguf``) answers
  ``302`` to the CDN with ``X-Linked-Etag`` (the sha256, quoted), ``X-Linked-Size`` and the pointer's ``ETag``;
  a regular file answers ``200`` with its git blob id as ``ETag``. Errors carry ``X-Error-Code``
  (``RepoNotFound`` 401, ``RevisionNotFound`` / ``EntryNotFound`` 404) as the Hub sends them.
  ``regular`` names files kept in git instead of LFS.
* The CDN, on a second port (another origin, so the client does not send its token there):
  ``GET /lfs/SHA256`` with ``Accept-Ranges: bytes``; ``Range: bytes=N-`` answers ``206`` + ``Content-Range``.

Failure knobs: ``cut_after`` (bytes of a CDN body sent before the connection is dropped, for the next
``cut_times`` downloads), ``status_after_cut`` (the status later downloads get, e.g. 503, so a pull fails
as an interrupted one would), ``stall_after`` (bytes sent before the CDN goes silent, as a dead line does),
``corrupt`` (file names served with the right size but wrong bytes), ``cdn_delay`` (a slow start).

Each response goes out in one ``write`` on a ``TCP_NODELAY`` socket. Nothing here imports autotune code.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

__all__ = ["FakeHub", "HubRequest"]

_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+?)(?:/revision/(?P<rev>[^/]+))?$")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass
class HubRequest:
    port: str  # "hub" or "cdn"
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class _Repo:
    commit: str
    files: dict[str, bytes] = field(default_factory=dict)


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def _head(status: int, reason: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class FakeHub:
    """``hub = FakeHub(); hub.add_repo("owner/name", {"m-Q4_K_M.gguf": data}); hub.start()``; ``hub.url``."""

    def __init__(self) -> None:
        self.repos: dict[str, _Repo] = {}
        self.requests: list[HubRequest] = []
        self.cut_after: int | None = None
        self.cut_times = 0
        self.status_after_cut: int | None = None
        self.corrupt: set[str] = set()
        #: file names kept in git rather than LFS even if they end in .gguf (ETag = git blob id, no redirect)
        self.regular: set[str] = set()
        #: bytes of a CDN body sent before the stand-in goes silent (for ``stall_seconds``, then it hangs up)
        self.stall_after: int | None = None
        self.stall_seconds = 30.0
        #: seconds the CDN waits before answering a download (a slow line)
        self.cdn_delay = 0.0
        self.by_sha: dict[str, bytes] = {}
        #: id(content) -> (sha256, git blob id), computed once (hashing 250 MB per request would dominate)
        self._ids: dict[int, tuple[bytes, str, str]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._servers: list[asyncio.base_events.Server] = []
        self._conns: set[asyncio.Task[Any]] = set()
        self.port = self.cdn_port = 0

    # -- set-up ------------------------------------------------------------------------------------------------

    def add_repo(self, repo: str, files: dict[str, bytes], commit: str | None = None) -> str:
        commit = commit or hashlib.sha1(repo.encode(), usedforsecurity=False).hexdigest()
        self.repos[repo] = _Repo(commit=commit, files=dict(files))
        for data in files.values():
            self.by_sha[self._sha(data)] = data
        return commit

    def _sha(self, data: bytes) -> str:
        return self._hashes(data)[0]

    def _hashes(self, data: bytes) -> tuple[str, str]:
        known = self._ids.get(id(data))
        if known is None or known[0] is not data:  # the entry keeps the bytes alive, so ids are not reused
            known = self._ids[id(data)] = (data, hashlib.sha256(data).hexdigest(), git_blob_id(data))
        return known[1], known[2]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def cdn_url(self) -> str:
        return f"http://127.0.0.1:{self.cdn_port}"

    def downloads(self) -> list[HubRequest]:
        return [r for r in self.requests if r.port == "cdn" and r.method == "GET"]

    def start(self) -> FakeHub:
        loop = asyncio.new_event_loop()
        self._loop = loop
        socks = []
        for _ in range(2):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            sock.listen(64)
            sock.setblocking(False)
            socks.append(sock)
        self.port, self.cdn_port = socks[0].getsockname()[1], socks[1].getsockname()[1]
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            for sock, kind in zip(socks, ("hub", "cdn"), strict=True):
                handler = self._conn_handler(kind)
                self._servers.append(loop.run_until_complete(asyncio.start_server(handler, sock=sock)))
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-hub", daemon=True)
        self._thread.start()
        if not ready.wait(5.0):
            raise RuntimeError("fake hub did not start")
        return self

    def close(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def shutdown() -> None:
            for server in self._servers:
                server.close()
            for task in list(self._conns):
                task.cancel()
            if self._conns:
                await asyncio.wait(list(self._conns), timeout=2.0)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=5.0)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5.0)
        if not thread.is_alive():
            loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- HTTP ----------------------------------------------------------------------------------------------------

    def _conn_handler(self, kind: str) -> Any:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            if task is not None:
                self._conns.add(task)
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                for _ in range(1000):  # bounded keep-alive
                    try:
                        head = await reader.readuntil(b"\r\n\r\n")
                    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                        break
                    request_line, *lines = head[:-4].decode("latin-1").split("\r\n")
                    method, target, _version = request_line.split(" ", 2)
                    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
                    path, _, query = target.partition("?")
                    self.requests.append(HubRequest(kind, method, unquote(path), headers))
                    if not await self._answer(kind, method, unquote(path), query, headers, writer):
                        break
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                self._conns.discard(task)  # type: ignore[arg-type]
                with contextlib.suppress(Exception):
                    writer.close()

        return serve

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        method: str,
        status: int,
        reason: str,
        headers: list[tuple[str, str]],
        body: bytes,
        *,
        cut: int | None = None,
    ) -> bool:
        headers = [*headers, ("Content-Length", str(len(body)))]
        payload = _head(status, reason, headers) + (
            b"" if method == "HEAD" else body[: cut if cut is not None else len(body)]
        )
        writer.write(payload)
        await writer.drain()
        return cut is None

    def _json(self, status: int, obj: Any, extra: list[tuple[str, str]] | None = None) -> tuple[int, list[Any], bytes]:
        return status, [("Content-Type", "application/json; charset=utf-8"), *(extra or [])], json.dumps(obj).encode()

    async def _answer(
        self, kind: str, method: str, path: str, query: str, headers: dict[str, str], writer: asyncio.StreamWriter
    ) -> bool:
        reasons = {
            200: "OK",
            206: "Partial Content",
            302: "Found",
            401: "Unauthorized",
            404: "Not Found",
            416: "Range Not Satisfiable",
            503: "Service Unavailable",
        }
        if kind == "cdn":
            return await self._cdn(method, path, headers, writer, reasons)
        info = _INFO.match(path)
        resolve = _RESOLVE.match(path)
        if info and method == "GET":
            status, hdrs, body = self._model_info(info["repo"], info["rev"], "blobs=true" in query)
        elif resolve and method in ("GET", "HEAD"):
            status, hdrs, body = self._resolve(resolve["repo"], resolve["rev"], resolve["file"])
        else:
            status, hdrs, body = self._json(404, {"error": "Not Found"})
        return await self._send(writer, method, status, reasons.get(status, "Error"), hdrs, body)

    def _repo_or_error(self, repo: str, rev: str | None) -> _Repo | tuple[int, list[Any], bytes]:
        found = self.repos.get(repo)
        if found is None:
            return self._json(401, {"error": "Repository Not Found"}, [("X-Error-Code", "RepoNotFound")])
        if rev not in (None, "main", found.commit):
            return self._json(404, {"error": "Invalid rev id: " + str(rev)}, [("X-Error-Code", "RevisionNotFound")])
        return found

    def _model_info(self, repo: str, rev: str | None, blobs: bool) -> tuple[int, list[Any], bytes]:
        found = self._repo_or_error(repo, rev)
        if isinstance(found, tuple):
            return found
        siblings = []
        for name, data in found.files.items():
            sibling: dict[str, Any] = {"rfilename": name}
            if blobs:
                sibling.update(size=len(data), blobId=self._hashes(data)[1])
                if self._is_lfs(name):
                    sibling["lfs"] = {"sha256": self._sha(data), "size": len(data), "pointerSize": 134}
            siblings.append(sibling)
        return self._json(
            200,
            {
                "_id": "0" * 24,
                "id": repo,
                "modelId": repo,
                "author": repo.split("/")[0],
                "sha": found.commit,
                "private": False,
                "gated": False,
                "disabled": False,
                "library_name": "gguf",
                "tags": ["gguf"],
                "siblings": siblings,
                "lastModified": "2026-01-01T00:00:00.000Z",
            },
        )

    def _is_lfs(self, name: str) -> bool:
        return name.endswith(".gguf") and name not in self.regular

    def _resolve(self, repo: str, rev: str, file: str) -> tuple[int, list[Any], bytes]:
        found = self._repo_or_error(repo, rev)
        if isinstance(found, tuple):
            return found
        commit = ("X-Repo-Commit", found.commit)
        data = found.files.get(file)
        if data is None:
            return self._json(404, {"error": "Entry not found"}, [("X-Error-Code", "EntryNotFound"), commit])
        if self._is_lfs(file):
            sha = self._sha(data)
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(data)}\n"
            body = f"Found. Redirecting to {self.cdn_url}/lfs/{sha}".encode()
            return (
                302,
                [
                    ("Location", f"{self.cdn_url}/lfs/{sha}?download=true&X-Amz-Signature=fake"),
                    ("ETag", f'"{git_blob_id(pointer.encode())}"'),
                    ("X-Linked-Etag", f'"{sha}"'),
                    ("X-Linked-Size", str(len(data))),
                    commit,
                    ("Content-Type", "text/plain"),
                ],
                body,
            )
        return (
            200,
            [
                ("ETag", f'"{self._hashes(data)[1]}"'),
                commit,
                ("Accept-Ranges", "bytes"),
                ("Content-Type", "application/octet-stream"),
            ],
            data,
        )

    async def _cdn(
        self, method: str, path: str, headers: dict[str, str], writer: asyncio.StreamWriter, reasons: dict[int, str]
    ) -> bool:
        sha = path.removeprefix("/lfs/")
        data = self.by_sha.get(sha)
        if data is None:
            return await self._send(writer, method, 404, "Not Found", [("Content-Type", "text/plain")], b"NoSuchKey")
        if self.corrupt and any(
            self._sha(f) == sha
            for repo in self.repos.values()
            for name, f in repo.files.items()
            if name in self.corrupt
        ):
            data = bytes(b ^ 0x5A for b in data)
        if method == "GET" and self.cut_times <= 0 and self.status_after_cut is not None:
            return await self._send(
                writer,
                method,
                self.status_after_cut,
                "Service Unavailable",
                [("Content-Type", "text/plain")],
                b"try later",
            )
        if method == "GET" and self.cdn_delay > 0:
            await asyncio.sleep(self.cdn_delay)
        common = [("ETag", f'"{sha}"'), ("Accept-Ranges", "bytes"), ("Content-Type", "application/octet-stream")]
        status, body = 200, data
        match = _RANGE.match(headers.get("range", ""))
        if match:
            start = int(match[1])
            end = int(match[2]) if match[2] else len(data) - 1
            if start >= len(data):
                return await self._send(
                    writer, method, 416, reasons[416], [("Content-Range", f"bytes */{len(data)}")], b""
                )
            status, body = 206, data[start : end + 1]
            common.append(("Content-Range", f"bytes {start}-{end}/{len(data)}"))
        cut = None
        if method == "GET" and self.cut_after is not None and self.cut_times > 0 and self.cut_after < len(body):
            self.cut_times -= 1
            cut = self.cut_after
        if method == "GET" and self.stall_after is not None and self.stall_after < len(body):
            await self._send(writer, method, status, reasons[status], common, body, cut=self.stall_after)
            await asyncio.sleep(self.stall_seconds)
            return False
        return await self._send(writer, method, status, reasons[status], common, body, cut=cut)
