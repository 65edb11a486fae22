"""When the pipeline asks the backend for an exact prompt token count (a round trip on HTTP servers)."""

from __future__ import annotations

from typing import Any

import pytest

from autotune_core.backend import Capabilities, KnobScope, KnobSupport
from autotune_core.host import PluginHost
from autotune_core.messages import ChatRequest, Message
from autotune_core.pipeline import EXACT_COUNT_FROM_TOKENS, Pipeline, worth_counting
from autotune_core.plan import Plan
from autotune_core.testing import LLAMA_1B, FakeBackend, make_hardware


def caps(num_ctx: KnobScope, can_tokenize: bool = True) -> Capabilities:
    return Capabilities(dialect="fake", can_tokenize=can_tokenize, knobs={"num_ctx": KnobSupport(scope=num_ctx)})


@pytest.mark.parametrize(
    ("scope", "can_tokenize", "estimate", "expected"),
    [
        (KnobScope.SERVER_ENV, False, 10_000, False),  # nothing to ask
        (KnobScope.PER_REQUEST, True, 10, True),  # the count sizes a per-request context
        (KnobScope.AT_LOAD, True, 10, True),  # ... or the context of the next load
        (KnobScope.SERVER_ENV, True, 10, False),  # fixed context, short prompt: cannot matter
        (KnobScope.SERVER_ENV, True, EXACT_COUNT_FROM_TOKENS - 1, False),
        (KnobScope.SERVER_ENV, True, EXACT_COUNT_FROM_TOKENS, True),  # long enough to come near the context
        (KnobScope.UNSUPPORTED, True, 5_000, True),
    ],
)
def test_worth_counting(scope: KnobScope, can_tokenize: bool, estimate: int, expected: bool) -> None:
    assert worth_counting(caps(scope, can_tokenize), estimate) is expected


class CountingBackend(FakeBackend):
    """A fake llama-server: fixed context, exact counts on request (counted)."""

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        super().__init__(settings)
        self.caps = caps(KnobScope.SERVER_ENV)
        self.counted = 0

    async def count_tokens(self, model: str, request: ChatRequest, plan: Plan) -> int | None:
        self.counted += 1
        return 4242


@pytest.mark.parametrize(("words", "exact"), [(5, False), (2_000, True)])
async def test_short_prompts_skip_the_round_trip_on_a_fixed_context_server(words: int, exact: bool) -> None:
    host = PluginHost(plugins=[], load_entrypoints=False, hardware=make_hardware())
    backend = CountingBackend()
    request = ChatRequest(model=LLAMA_1B.name, messages=[Message(role="user", content=" ".join(["word"] * words))])
    plan = (await Pipeline(host).plan(request, backend, LLAMA_1B)).plan
    assert backend.counted == int(exact) and plan.prompt_tokens_exact is exact
    assert (plan.prompt_tokens == 4242) is exact
