"""The embedded backend takes the archetype's micro-batch (recorded by auto-tune in plan.flags); config wins."""

from __future__ import annotations

import pytest

from autotune_core.plan import Plan

llamacpp = pytest.importorskip("autotune_plugins.backends.llamacpp")


def _plan(ubatch: object | None) -> Plan:
    plan = Plan(model="m", backend="llamacpp", num_batch=1024)
    if ubatch is not None:
        plan.flags["archetype"] = {"id": "cpu-x86-32gb", "params": {"embedded.n_ubatch": ubatch}, "origins": {}}
    return plan


def test_archetype_ubatch_is_applied_and_capped_by_the_batch() -> None:
    backend = llamacpp.LlamaCppBackend()
    assert backend.load_params("/m.gguf", _plan(256)).n_ubatch == 256
    assert backend.load_params("/m.gguf", _plan(4096)).n_ubatch == 1024  # never above n_batch
    assert backend.load_params("/m.gguf", _plan(None)).n_ubatch == 1024
    assert backend.load_params("/m.gguf", _plan("junk")).n_ubatch == 1024


def test_config_wins_over_the_archetype() -> None:
    backend = llamacpp.LlamaCppBackend({"n_ubatch": 128})
    assert backend.load_params("/m.gguf", _plan(256)).n_ubatch == 128
