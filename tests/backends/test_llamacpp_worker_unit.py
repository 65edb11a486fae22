"""The worker protocol's framing and the crash policy, without a model (fast)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from autotune_core.errors import BackendCrashed
from autotune_plugins.backends.llamacpp.crashes import REINSTALL, CrashPolicy, describe
from autotune_plugins.backends.llamacpp.protocol import (
    FrameBuffer,
    ProtocolError,
    json_frame,
    read_frame,
    token_frame,
)


def test_frames_survive_any_split_and_several_per_read() -> None:
    frames = (
        json_frame({"ev": "loaded", "id": 3, "text": "héllo ✓"})
        + token_frame(7, "wörld", 12.5)
        + token_frame(7, "", 13.0)
        + json_frame({"ev": "done", "id": 7})
    )
    for step in (1, 3, 7, len(frames)):
        buffer = FrameBuffer()
        out = []
        for start in range(0, len(frames), step):
            out.extend(buffer.feed(frames[start : start + step]))
        assert out == [
            ("json", {"ev": "loaded", "id": 3, "text": "héllo ✓"}),
            ("token", (7, 12.5, "wörld")),
            ("token", (7, 13.0, "")),
            ("json", {"ev": "done", "id": 7}),
        ]


def test_nonsense_on_the_wire_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        FrameBuffer().feed(b"\x00\x00\x00\x02X1")
    with pytest.raises(ProtocolError):
        FrameBuffer().feed(b"\xff\xff\xff\xff")
    with pytest.raises(ProtocolError):
        FrameBuffer().feed(b"\x00\x00\x00\x04J[1]")


def test_blocking_reader_matches_the_buffer() -> None:
    left, right = socket.socketpair()
    try:
        data = json_frame({"op": "gen", "id": 1, "messages": ["x" * 300_000]}) + token_frame(1, "a", 1.0)
        sender = threading.Thread(target=left.sendall, args=(data,))  # larger than the socket buffer
        sender.start()
        first, second = read_frame(right), read_frame(right)
        sender.join(timeout=5)
        assert first is not None and first[1]["op"] == "gen" and len(first[1]["messages"][0]) == 300_000
        assert second == ("token", (1, 1.0, "a"))
        left.close()
        assert read_frame(right) is None
    finally:
        right.close()


def test_crash_messages_name_the_signal_and_the_fix() -> None:
    early = describe(-11, before_first_token=True)
    assert early.signal == "SIGSEGV" and REINSTALL in early.message and "before its first token" in early.message
    late = describe(-11, before_first_token=False)
    assert "middle of an answer" in late.message
    assert "out-of-memory" in describe(-9, before_first_token=False).message
    assert "status 1" in describe(1, before_first_token=True).message
    hung = describe(-9, before_first_token=False, killed="stopped answering")
    assert "stopped answering" in hung.message and "killed" in hung.message


def test_crashes_back_off_then_stay_down_and_a_success_resets() -> None:
    policy = CrashPolicy(max_crashes=3, backoff=0.2)
    policy.record(describe(-11, before_first_token=False))
    policy.check()  # the first crash restarts at once
    policy.record(describe(-11, before_first_token=False))
    with pytest.raises(BackendCrashed) as backing_off:
        policy.check()
    assert "next start is in" in backing_off.value.message and backing_off.value.signal == "SIGSEGV"
    time.sleep(0.25)
    policy.check()
    policy.success()
    policy.record(describe(-11, before_first_token=False))
    policy.check()  # the streak started again
    policy.record(describe(-11, before_first_token=False))
    policy.record(describe(-11, before_first_token=False))
    assert policy.reason() and "3 worker crashes in a row" in (policy.reason() or "")
    with pytest.raises(BackendCrashed):
        policy.check()


def test_sigill_at_the_first_token_is_down_at_once() -> None:
    policy = CrashPolicy(max_crashes=5, backoff=0)
    policy.record(describe(-4, before_first_token=True))
    assert policy.reason() and REINSTALL in (policy.reason() or "")
    with pytest.raises(BackendCrashed) as down:
        policy.check()
    assert down.value.status == 502 and down.value.code == "backend_crashed"
