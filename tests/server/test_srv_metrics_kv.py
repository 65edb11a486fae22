"""record_result's KV-type gauge: one series per model, switched when the model's type changes (it is now
rebuilt only then, not on every request)."""

from __future__ import annotations

from types import SimpleNamespace

from autotune_core.messages import ChatResult
from autotune_core.plan import Plan
from autotune_core.server.exchange import record_result
from autotune_core.server.metrics import ServerMetrics


def _served(metrics: ServerMetrics, model: str, kv_type: str) -> None:
    prepared = SimpleNamespace(plan=Plan(model=model, kv_type=kv_type), request=SimpleNamespace(model=model))
    record_result(SimpleNamespace(metrics=metrics), prepared, ChatResult(model=model, backend="fake"))  # type: ignore[arg-type]


def test_one_series_per_model_and_it_follows_the_type() -> None:
    metrics = ServerMetrics()
    _served(metrics, "a", "f16")
    _served(metrics, "b", "q8_0")
    _served(metrics, "a", "f16")  # unchanged: the gauge stays as it was
    assert metrics.kv_type.values == {(("kv_type", "f16"), ("model", "a")): 1, (("kv_type", "q8_0"), ("model", "b")): 1}
    _served(metrics, "a", "q4_0")
    assert metrics.kv_type.values == {
        (("kv_type", "q8_0"), ("model", "b")): 1,
        (("kv_type", "q4_0"), ("model", "a")): 1,
    }
