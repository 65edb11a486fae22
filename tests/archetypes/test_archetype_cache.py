"""The local versioned cache and refresh from a URL, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from archetype_helpers import profile_set

from autotune_core.archetypes import dump_profile_set
from autotune_core.config import Settings
from autotune_core.testing import make_hardware
from autotune_plugins.archetypes.bundled import BundledProfilesPlugin, bundled_set, sets_to_register
from autotune_plugins.archetypes.cache import ProfileCache


class _Server:
    """Serves ``self.body`` with ``self.status`` at any path; counts requests."""

    def __init__(self) -> None:
        self.body = b""
        self.status = 200
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/profiles.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def serve(self, data: dict | bytes, status: int = 200) -> None:
        self.body = data if isinstance(data, bytes) else json.dumps(data).encode()
        self.status = status


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def _curated(version: int, num_ctx: int = 12288) -> dict:
    return profile_set(
        "bundled",
        {"cpu-x86-16gb": {"common": {"num_ctx": num_ctx}}},
        version=version,
        source="curated from community benches",
    )


def _cache_bytes(store: ProfileCache) -> bytes | None:
    path = store.root / "remote.json"
    return path.read_bytes() if path.exists() else None


def test_good_download_updates_the_cache_and_wins_over_bundled(server: _Server, tmp_path: Path) -> None:
    store = ProfileCache(tmp_path / "archetypes")
    server.serve(_curated(bundled_set().version + 1))
    result = store.refresh(server.url, timeout=5)
    assert result.status == "updated" and server.hits == 1
    cached = store.cached()
    assert cached is not None and cached.version == bundled_set().version + 1
    names = [(s.name, s.version) for s in sets_to_register(store)]
    assert names == [("bundled", 1), ("bundled", 2)]  # registered later: wins ties of priority


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"{this is not json", "invalid JSON"),
        (
            json.dumps(
                {
                    "schema_version": 1,
                    "name": "bundled",
                    "version": 9,
                    "profiles": {"x": {"common": {"num_batch": "lots"}}},
                }
            ).encode(),
            "profiles.x.common.num_batch",
        ),
        (json.dumps({**_curated(9), "schema_version": 7}).encode(), "schema_version 7 is not supported"),
        (json.dumps(_curated(2)).encode(), "older than the cached 5"),
    ],
)
def test_bad_or_older_downloads_never_replace_a_good_cache(
    server: _Server, tmp_path: Path, payload: bytes, why: str
) -> None:
    store = ProfileCache(tmp_path / "archetypes")
    server.serve(_curated(5))
    assert store.refresh(server.url, timeout=5).status == "updated"
    before = _cache_bytes(store)
    server.serve(payload)
    result = store.refresh(server.url, timeout=5)
    assert result.status == "rejected" and why in result.message
    assert _cache_bytes(store) == before
    cached = store.cached()
    assert cached is not None and cached.version == 5


def test_same_version_is_unchanged_and_http_errors_are_rejected(server: _Server, tmp_path: Path) -> None:
    store = ProfileCache(tmp_path / "archetypes")
    server.serve(_curated(3))
    store.refresh(server.url, timeout=5)
    before = _cache_bytes(store)
    assert store.refresh(server.url, timeout=5).status == "unchanged"
    server.serve(b"oops", status=500)
    assert store.refresh(server.url, timeout=5).status == "rejected"
    assert _cache_bytes(store) == before


def test_offline_keeps_the_bundled_set(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = ProfileCache(tmp_path / "archetypes")
    result = store.refresh(f"http://127.0.0.1:{port}/profiles.json", timeout=2)
    assert result.status == "offline" and store.cached() is None
    assert [s.name for s in sets_to_register(store)] == ["bundled"]


def test_a_cache_not_newer_than_bundled_or_corrupt_on_disk_is_ignored(tmp_path: Path) -> None:
    store = ProfileCache(tmp_path / "archetypes")
    store.root.mkdir(parents=True)
    (store.root / "remote.json").write_text(json.dumps(_curated(bundled_set().version)))
    assert [s.version for s in sets_to_register(store)] == [bundled_set().version]
    (store.root / "remote.json").write_text("{corrupt")
    assert store.cached() is None and len(sets_to_register(store)) == 1


def test_staleness_follows_refresh_hours(server: _Server, tmp_path: Path) -> None:
    store = ProfileCache(tmp_path / "archetypes")
    assert store.stale(24)
    server.serve(_curated(2))
    store.refresh(server.url, timeout=5)
    checked = store.meta()["checked_at"]
    assert not store.stale(24, now=checked + 3600)
    assert store.stale(24, now=checked + 25 * 3600)


def test_startup_refreshes_a_stale_cache_and_swaps_the_registered_sets(
    server: _Server, autotune_host_factory: Any
) -> None:
    server.serve(_curated(bundled_set().version + 1, num_ctx=12288))
    config = Settings(backend="fake", archetypes={"url": server.url, "refresh_hours": 1, "timeout": 5})
    host = autotune_host_factory(BundledProfilesPlugin(), hardware=make_hardware(16), config=config)
    assert [s.version for _p, s in host.archetype_sets] == [1]
    asyncio.run(host.start())
    assert server.hits == 1
    assert [s.version for _p, s in host.archetype_sets] == [1, 2]
    asyncio.run(host.start())  # fresh now: no second download
    assert server.hits == 1


def test_invalid_archetypes_config_names_the_key() -> None:
    from autotune_core.errors import ConfigError
    from autotune_plugins.archetypes.cache import archetypes_config

    with pytest.raises(ConfigError, match=r"archetypes\.refresh_hours"):
        archetypes_config({"url": "http://127.0.0.1:1/x", "refresh_hours": -1})


def test_cache_dump_round_trips(tmp_path: Path, server: _Server) -> None:
    store = ProfileCache(tmp_path / "archetypes")
    server.serve(_curated(4))
    store.refresh(server.url, timeout=5)
    cached = store.cached()
    assert cached is not None and dump_profile_set(cached)["profiles"]["cpu-x86-16gb"]["common"]["num_ctx"] == {
        "value": 12288,
        "source": "curated from community benches",
    }
