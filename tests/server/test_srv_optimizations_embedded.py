"""The default plugin stack (every installed plugin) end to end through the server on the embedded model:
a three-turn chat through the official OpenAI SDK is tuned (small context, flash attention, one load, no
reload after the first turn), and the plan header shows the optimization plugins' steps."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from conftest import LiveServer, serve

from autotune_core.config import validate_settings
from autotune_core.host import PluginHost
from autotune_core.testing import make_hardware

pytestmark = pytest.mark.embedded


@pytest.fixture(scope="module")
def tuned() -> Iterator[LiveServer]:
    """A live server on every entry point and the real embedded model, shared by the module (one model load)."""
    pytest.importorskip("llama_cpp")
    config = validate_settings({"backend_order": ["llamacpp"]}, "<test>")
    host = PluginHost(config=config, env={}, hardware=make_hardware(16, 12))  # every entry point
    if "llamacpp" not in host.backend_classes:
        pytest.skip("the llamacpp backend is not registered")
    live = serve(host)
    try:
        yield live
    finally:
        live.stop()


def test_a_conversation_is_tuned_and_never_reloads(tuned: LiveServer) -> None:
    client = openai.OpenAI(base_url=tuned.url + "/v1", api_key="x", timeout=120, max_retries=0)
    model = client.models.list().data[0].id
    messages: list[Any] = [{"role": "system", "content": "You are a helpful assistant. Answer briefly."}]
    headers = []
    for question in ("What is the capital of France?", "And of Italy?", "And of Spain?"):
        messages.append({"role": "user", "content": question})
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=messages, max_tokens=10, temperature=0
        )
        answer = raw.parse().choices[0].message.content
        assert answer and answer.strip()
        messages.append({"role": "assistant", "content": answer})
        headers.append(raw.headers["x-autotune-plan"])
    for plan in headers:
        for plugin in ("ctx-sizing", "ctx-buckets", "kv-precision", "flash-attention", "keep-alive"):
            assert plugin in plan, f"{plugin} missing from the plan header: {plan}"
    # the compact trace: "num_ctx=auto-tune>4096,ctx-sizing>512,ctx-buckets>1024;kv_type=..."; last step wins
    sizes = {dict(part.split("=", 1) for part in h.split(";"))["num_ctx"].rsplit(">", 1)[1] for h in headers}
    assert len(sizes) == 1 and int(next(iter(sizes))) <= 1536, headers  # one small size, not 4096
    engine = tuned.host.backend("llamacpp").engine  # type: ignore[attr-defined]
    assert engine.loads == 1 and engine.reloads == 0
    assert tuned.host.plugin("ctx-buckets").resizes == 0  # type: ignore[union-attr]
    tuned.wait_idle()
