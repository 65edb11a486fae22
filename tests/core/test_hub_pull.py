"""``autotune pull`` from a Hub stand-in on 127.0.0.1 (tests/fakes/fake_hub.py): the real huggingface_hub
code path — listing, HEAD metadata, redirect to a CDN origin, range requests — with no network."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes.fake_hub import FakeHub

from autotune_core.cli import _build
from autotune_core.cli.common import reset_host
from autotune_core.hub import MANIFEST_SUFFIX, PullError, pull_dir, pull_gguf
from autotune_core.model_refs import parse_ref
from autotune_core.pull_progress import PullEvent

REPO = "owner/tiny-GGUF"
SIZE = 1 << 20
CHUNK = 64 * 1024


@pytest.fixture
def data() -> dict[str, bytes]:
    return {"tiny-Q4_K_M.gguf": os.urandom(SIZE), "tiny-Q8_0.gguf": os.urandom(SIZE + 123), "README.md": b"# tiny\n"}


@pytest.fixture
def hub(data: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    import huggingface_hub.constants

    # huggingface_hub writes to disk in DOWNLOAD_CHUNK_SIZE pieces (10 MiB): smaller, so a 1 MiB file resumes
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", CHUNK)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with FakeHub() as fake:
        fake.add_repo(REPO, data)
        yield fake


def _pull(hub: FakeHub, model: str, events: list[PullEvent] | None = None, **kw: str) -> object:
    return pull_gguf(
        parse_ref(model, **kw), endpoint=hub.url, token=False, on_event=events.append if events is not None else None
    )


def test_a_fresh_pull_lands_verified_in_the_data_dir(hub: FakeHub, data: dict[str, bytes]) -> None:
    events: list[PullEvent] = []
    manifest = _pull(hub, f"hf.co/{REPO}", events)  # no quant: Q4_K_M, as Ollama picks
    path = pull_dir() / REPO / "tiny-Q4_K_M.gguf"
    assert path.read_bytes() == data["tiny-Q4_K_M.gguf"]
    sha = hashlib.sha256(data["tiny-Q4_K_M.gguf"]).hexdigest()
    stored = json.loads((path.parent / ("tiny-Q4_K_M.gguf" + MANIFEST_SUFFIX)).read_text())
    assert stored["name"] == f"hf.co/{REPO}:Q4_K_M" and stored["digest"] == f"sha256:{sha}"
    assert stored["revision"] == hub.repos[REPO].commit and stored["size"] == SIZE
    assert manifest.name == stored["name"]  # type: ignore[attr-defined]
    assert str(pull_dir()).startswith(os.environ["AUTOTUNE_DATA_DIR"])
    # what the Hub was asked: the listing (to pick the quant), HEAD /resolve, then the CDN
    asked = [(r.port, r.method, r.path) for r in hub.requests]
    assert asked == [
        ("hub", "GET", f"/api/models/{REPO}"),
        ("hub", "HEAD", f"/{REPO}/resolve/main/tiny-Q4_K_M.gguf"),
        ("cdn", "GET", f"/lfs/{sha}"),
    ]
    assert not list(path.parent.glob("*.part"))
    # progress: the bar's events carry the file's digest and reach the full size; the last word is success
    bar = [e for e in events if e.digest == f"sha256:{sha}" and e.total]
    assert bar and bar[-1].completed == SIZE and bar[-1].total == SIZE
    assert events[0].status == "pulling manifest" and events[-1].status == "success"
    assert "verifying sha256 digest" in [e.status for e in events]


def test_a_second_pull_of_the_same_file_downloads_nothing(hub: FakeHub) -> None:
    _pull(hub, REPO, file="tiny-Q8_0.gguf")
    hub.requests.clear()
    events: list[PullEvent] = []
    _pull(hub, REPO, events, file="tiny-Q8_0.gguf")
    assert hub.downloads() == [] and "up to date" in [e.status for e in events]


def test_two_pulls_of_one_file_at_once_download_it_once(hub: FakeHub, data: dict[str, bytes]) -> None:
    import threading

    hub.cdn_delay = 0.3  # both pulls are past their first "is it there?" check before either finishes
    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(_pull(hub, REPO, quant="Q8_0"))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(results) == 2 and len(hub.downloads()) == 1
    assert (pull_dir() / REPO / "tiny-Q8_0.gguf").read_bytes() == data["tiny-Q8_0.gguf"]


def test_a_connection_cut_midway_resumes_with_a_range_request(hub: FakeHub, data: dict[str, bytes]) -> None:
    hub.cut_after, hub.cut_times = 300_000, 1  # the CDN drops the connection after 300 kB, once
    _pull(hub, f"hf.co/{REPO}:Q8_0")
    got = (pull_dir() / REPO / "tiny-Q8_0.gguf").read_bytes()
    assert got == data["tiny-Q8_0.gguf"]
    first, second = hub.downloads()
    assert "range" not in first.headers
    kept = 300_000 // CHUNK * CHUNK  # what reached the disk before the cut
    assert second.headers["range"] == f"bytes={kept}-"


def test_an_interrupted_pull_resumes_on_the_next_run(hub: FakeHub, data: dict[str, bytes]) -> None:
    hub.cut_after, hub.cut_times, hub.status_after_cut = 500_000, 1, 503  # cut, then the CDN is down
    with pytest.raises(PullError, match="run the same pull again to resume") as info:
        _pull(hub, REPO, quant="Q4_K_M")
    assert "stopped at 458752 of 1048576 bytes" in info.value.message
    folder = pull_dir() / REPO
    (part,) = folder.glob("tiny-Q4_K_M.gguf.*.part")
    assert part.stat().st_size == 500_000 // CHUNK * CHUNK
    assert not (folder / "tiny-Q4_K_M.gguf").exists()
    kept = part.stat().st_size
    hub.status_after_cut = None
    hub.requests.clear()
    _pull(hub, REPO, quant="Q4_K_M")
    (resumed,) = hub.downloads()
    assert resumed.headers["range"] == f"bytes={kept}-"
    assert (folder / "tiny-Q4_K_M.gguf").read_bytes() == data["tiny-Q4_K_M.gguf"]
    assert not list(folder.glob("*.part"))


def test_a_checksum_mismatch_is_refused_and_nothing_is_kept(hub: FakeHub) -> None:
    hub.corrupt = {"tiny-Q4_K_M.gguf"}  # right size, wrong bytes
    with pytest.raises(PullError, match="checksum mismatch") as info:
        _pull(hub, REPO)
    assert hashlib.sha256(hub.repos[REPO].files["tiny-Q4_K_M.gguf"]).hexdigest() in info.value.message
    folder = pull_dir() / REPO
    assert sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock")) == []


def test_a_regular_file_is_checked_against_its_git_blob_id(hub: FakeHub) -> None:
    from fakes.fake_hub import git_blob_id

    content = b"GGUF" + bytes(range(60))
    hub.add_repo("owner/small", {"small.gguf": content})
    hub.regular = {"small.gguf"}  # in git, not LFS: 200 from the Hub itself, ETag = git blob id
    manifest = _pull(hub, "owner/small", file="small.gguf")
    assert manifest.digest == f"gitsha1:{git_blob_id(content)}"  # type: ignore[attr-defined]
    assert (pull_dir() / "owner/small/small.gguf").read_bytes() == content
    assert hub.downloads() == [] and [r.method for r in hub.requests] == ["HEAD", "GET"]


def test_a_file_name_cannot_leave_the_pull_cache(hub: FakeHub) -> None:
    hub.add_repo("owner/evil", {"../../../escaped.gguf": b"GGUF"})
    with pytest.raises(PullError, match="would leave the pull cache"):
        _pull(hub, "owner/evil", file="../../../escaped.gguf")
    assert not (pull_dir().parent / "escaped.gguf").exists()


@pytest.mark.parametrize(
    ("model", "kw", "message"),
    [
        ("nobody/nothing", {}, "no repository nobody/nothing"),
        (REPO, {"quant": "Q2_K"}, "no Q2_K file; quants there: Q4_K_M, Q8_0"),
        (REPO, {"file": "absent-Q4_0.gguf"}, "has no file 'absent-Q4_0.gguf'"),
    ],
)
def test_hub_errors_are_explained(hub: FakeHub, model: str, kw: dict[str, str], message: str) -> None:
    with pytest.raises(PullError, match=message):
        _pull(hub, model, **kw)


def test_the_cli_pulls_and_keeps_the_token_on_the_hub(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    reset_host()
    result = CliRunner().invoke(
        _build(), ["pull", f"hf.co/{REPO}:Q8_0", "--endpoint", hub.url, "--json"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["name"] == f"hf.co/{REPO}:Q8_0" and Path(shown["path"]).is_file()
    head = next(r for r in hub.requests if r.method == "HEAD")
    assert head.headers.get("authorization") == "Bearer hf_not_a_real_token"
    assert all("authorization" not in r.headers for r in hub.downloads()), "the CDN never sees the token"


def test_the_cli_reports_a_failed_pull_without_a_traceback(hub: FakeHub) -> None:
    hub.corrupt = {"tiny-Q4_K_M.gguf"}
    reset_host()
    result = CliRunner().invoke(_build(), ["pull", REPO, "--endpoint", hub.url, "-q"])
    assert result.exit_code == 1
    assert "checksum mismatch" in result.output and "Traceback" not in result.output


def test_ctrl_c_during_a_pull_keeps_the_part_and_the_next_pull_continues(hub: FakeHub) -> None:
    """A real ``autotune pull`` process, interrupted with SIGINT while the line is silent, as a user would."""
    import signal
    import subprocess
    import sys
    import time

    big = os.urandom(24 << 20)  # past huggingface_hub's 10 MiB write unit, so bytes reach the disk
    hub.add_repo("owner/big-GGUF", {"big-Q4_K_M.gguf": big})
    hub.stall_after = 12 << 20
    folder = pull_dir() / "owner/big-GGUF"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from autotune_core.cli import main; main()",
            "pull",
            "owner/big-GGUF",
            "--endpoint",
            hub.url,
            "-q",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not any(p.stat().st_size >= 10 << 20 for p in folder.glob("*.part")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the download never reached the disk"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 1 and "interrupted; run the same pull again to resume" in err, (out, err)
    (part,) = folder.glob("big-Q4_K_M.gguf.*.part")
    kept = part.stat().st_size
    assert kept == 10 << 20
    hub.stall_after = None
    hub.requests.clear()
    _pull(hub, "owner/big-GGUF")
    (resumed,) = hub.downloads()
    assert resumed.headers["range"] == f"bytes={kept}-"
    assert (folder / "big-Q4_K_M.gguf").read_bytes() == big
