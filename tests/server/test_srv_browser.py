"""The real browser path: headless Chromium loads a page that calls autotune with ``fetch``.

From an allowed local origin (``http://127.0.0.1:<port>``) both doors and a plugin route answer, CORS
preflight included; from a foreign origin (``evil.test``, mapped to 127.0.0.1 with ``--host-resolver-rules``)
every call is blocked and nothing reaches the backend, not even a "simple" no-cors POST; and a DNS-rebinding
page (``evil.test`` on autotune's own port) gets 403 from the Host check. Skipped where Chromium is absent.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LiveServer, fake_host, serve

from autotune_plugins.recall import RecallPlugin

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP evil.test 127.0.0.1",
    "--virtual-time-budget=10000",
    "--dump-dom",
)
REPLY = "browser-ok-42"

#: each call's outcome as one line of text in #out; a blocked fetch rejects with TypeError
PAGE = """<!doctype html><html><body><pre id="out">pending</pre><script>
const base = "%(base)s";
const chat = {model: "llama3.2:1b", messages: [{role: "user", content: "hi"}], stream: false};
const json = {"Content-Type": "application/json", "Authorization": "Bearer unused", "x-stainless-os": "Linux"};
async function call(label, path, init) {
  try {
    const r = await fetch(base + path, init);
    const body = await r.json();
    const answer = body.choices ? body.choices[0].message.content
      : body.message ? body.message.content : "conversations=" + body.conversations.length;
    return `${label}: status=${r.status} backend=${r.headers.get("X-Autotune-Backend")} ${answer}`;
  } catch (e) {
    return `${label}: blocked ${e.name}`;
  }
}
Promise.all([
  call("openai", "/v1/chat/completions", {method: "POST", headers: json, body: JSON.stringify(chat)}),
  call("ollama", "/api/chat", {method: "POST", headers: json, body: JSON.stringify(chat)}),
  call("recall", "/api/conversations", {headers: {"Authorization": "Bearer unused"}}),
  // a "simple" request: no preflight, sent as is; the page cannot read it, the server must not act on it
  fetch(base + "/api/chat", {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"},
                             body: JSON.stringify(chat)}).then(() => "simple: sent", e => "simple: " + e.name),
]).then(lines => { document.getElementById("out").textContent = lines.join("\\n"); });
</script></body></html>"""


class PageServer:
    """Serves ``PAGE`` on 127.0.0.1 (one write per response, TCP_NODELAY, then close)."""

    def __init__(self, page: bytes) -> None:
        self.page = page
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.served = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                data = b""
                try:
                    while b"\r\n\r\n" not in data and len(data) < 65536:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                except OSError:
                    continue
                found = data.startswith(b"GET /page.html ")
                body = self.page if found else b"not found"
                status = b"200 OK" if found else b"404 Not Found"
                self.served += found
                conn.sendall(
                    b"HTTP/1.1 %s\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: %d\r\n"
                    b"Connection: close\r\nCache-Control: no-store\r\n\r\n%s" % (status, len(body), body)
                )

    def stop(self) -> None:
        self.stopping = True
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def autotune(tmp_path: Path) -> Iterator[LiveServer]:
    host = fake_host(RecallPlugin(), fake={"reply": REPLY})
    host.config.plugins.settings["recall"] = {"path": str(tmp_path / "memory.db")}
    live = serve(host)
    yield live
    live.stop(wait=False)


def dump_dom(url: str) -> str:
    """The page's DOM once its fetches settled (virtual time waits for the network), from a fresh profile."""
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory(prefix="autotune-chromium-") as profile:
        done = subprocess.run(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", url],
            capture_output=True,
            timeout=60,
            env={**os.environ, "HOME": profile},
        )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return done.stdout.decode()


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed (Debian: apt-get install -y chromium); the real-browser CORS test needs it",
)
def test_a_browser_page_from_a_local_origin_works_and_a_foreign_one_is_blocked(autotune: LiveServer) -> None:
    pages = PageServer((PAGE % {"base": autotune.url}).encode())
    try:
        allowed = dump_dom(f"http://127.0.0.1:{pages.port}/page.html")
        assert f"openai: status=200 backend=fake {REPLY}" in allowed, allowed
        assert f"ollama: status=200 backend=fake {REPLY}" in allowed, allowed
        assert "recall: status=200 backend=null conversations=0" in allowed, allowed
        assert "simple: sent" in allowed
        # the allowed page's two chats and its simple POST (a text/plain body autotune reads as JSON)
        reached = len(autotune.fake.plans)
        assert reached == 3

        foreign = dump_dom(f"http://evil.test:{pages.port}/page.html")
        assert pages.served == 2, "the foreign page was not loaded"
        for label in ("openai", "ollama", "recall"):
            assert f"{label}: blocked TypeError" in foreign, foreign
        assert "simple: sent" in foreign  # the browser sent it...
        assert len(autotune.fake.plans) == reached  # ...and the server refused it before any work

        # DNS rebinding: the attacker's name now points at 127.0.0.1, the page is "same origin" with autotune
        rebound = dump_dom(f"http://evil.test:{autotune.url.rsplit(':', 1)[1]}/v1/models")
        assert "host_not_allowed" in rebound and "llama3.2" not in rebound, rebound
    finally:
        pages.stop()
