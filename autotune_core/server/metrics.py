"""Prometheus text exposition, hand-written: counters, gauges and histograms with bounded label sets.

No client library: the format is simple, and one less dependency keeps the server's idle RSS and
import time down. Label sets are capped so a client cannot grow memory by inventing names.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

#: the most label combinations one metric keeps; more are folded into one "other" series
MAX_SERIES = 500

Labels = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _fmt_labels(labels: Labels, extra: tuple[str, str] | None = None) -> str:
    items = list(labels) + ([extra] if extra else [])
    if not items:
        return ""
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in items) + "}"


def _fmt_value(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _key(labels: dict[str, str] | None) -> Labels:
    if not labels:
        return ()
    if len(labels) == 1:  # most per-request series have one label: nothing to sort
        return tuple(labels.items())
    return tuple(sorted(labels.items()))


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help_text: str) -> None:
        self.name = name
        self.help = help_text

    def _bounded(self, store: dict[Labels, object], key: Labels) -> Labels:
        if key in store or len(store) < MAX_SERIES:
            return key
        return tuple((name, "other") for name, _ in key)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def render(self) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name, help_text)
        self.values: dict[Labels, float] = {}

    def inc(self, labels: dict[str, str] | None = None, amount: float = 1.0) -> None:
        key = self._bounded(self.values, _key(labels))  # type: ignore[arg-type]
        self.values[key] = self.values.get(key, 0.0) + amount

    def get(self, labels: dict[str, str] | None = None) -> float:
        return self.values.get(_key(labels), 0.0)

    def total(self) -> float:
        return sum(self.values.values())

    def render(self) -> list[str]:
        return self.header() + [f"{self.name}{_fmt_labels(k)} {_fmt_value(v)}" for k, v in sorted(self.values.items())]


class Gauge(Counter):
    kind = "gauge"

    def set(self, value: float, labels: dict[str, str] | None = None) -> None:
        key = self._bounded(self.values, _key(labels))  # type: ignore[arg-type]
        self.values[key] = value

    def replace(self, series: Iterable[tuple[dict[str, str], float]]) -> None:
        """Set the whole gauge from a fresh reading (label sets that vanished disappear)."""
        self.values = {_key(labels): value for labels, value in series}


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: Iterable[float]) -> None:
        super().__init__(name, help_text)
        self.buckets = sorted(buckets)
        self.series: dict[Labels, list[float]] = {}  # bucket counts..., then sum, then count

    def observe(self, value: float, labels: dict[str, str] | None = None) -> None:
        key = self._bounded(self.series, _key(labels))  # type: ignore[arg-type]
        row = self.series.get(key)
        if row is None:
            row = self.series[key] = [0.0] * (len(self.buckets) + 2)
        index = bisect.bisect_left(self.buckets, value)
        if index < len(self.buckets):
            row[index] += 1
        row[-2] += value
        row[-1] += 1

    def count(self, labels: dict[str, str] | None = None) -> int:
        row = self.series.get(_key(labels))
        return int(row[-1]) if row else 0

    def render(self) -> list[str]:
        lines = self.header()
        for key, row in sorted(self.series.items()):
            running = 0.0
            for bound, hits in zip(self.buckets, row, strict=False):
                running += hits
                lines.append(f"{self.name}_bucket{_fmt_labels(key, ('le', _fmt_value(bound)))} {_fmt_value(running)}")
            lines.append(f"{self.name}_bucket{_fmt_labels(key, ('le', '+Inf'))} {_fmt_value(row[-1])}")
            lines.append(f"{self.name}_sum{_fmt_labels(key)} {_fmt_value(row[-2])}")
            lines.append(f"{self.name}_count{_fmt_labels(key)} {_fmt_value(row[-1])}")
        return lines


LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1)
RATE_BUCKETS = (1, 2, 5, 10, 20, 40, 80, 160, 320, 640)


class ServerMetrics:
    """Every metric the server exposes on ``GET /metrics``."""

    def __init__(self) -> None:
        self.requests = Counter("autotune_requests_total", "Requests answered, by door, endpoint and HTTP status.")
        self.errors = Counter("autotune_errors_total", "Failed requests, by error type (including in-stream errors).")
        self.queue_depth = Gauge("autotune_queue_depth", "Requests waiting for a slot.")
        self.queue_active = Gauge("autotune_queue_active", "Requests holding a slot.")
        self.queue_capacity = Gauge(
            "autotune_queue_max_concurrent", "Slots usable now (max concurrent, lowered by a plugin's cap)."
        )
        self.queue_wait = Histogram("autotune_queue_wait_seconds", "Time spent waiting for a slot.", LATENCY_BUCKETS)
        self.queue_rejected = Counter("autotune_queue_rejected_total", "429 answers, by reason.")
        self.ttft = Histogram("autotune_ttft_seconds", "Time to first token as seen by the proxy.", LATENCY_BUCKETS)
        self.tokens_per_s = Histogram(
            "autotune_decode_tokens_per_second", "Decode speed reported by the backend.", RATE_BUCKETS
        )
        self.tokens = Counter("autotune_tokens_total", "Tokens processed, by kind (prompt, completion).")
        self.overhead = Histogram(
            "autotune_overhead_seconds",
            "Proxy time excluding upstream and queue time (planning + translation).",
            OVERHEAD_BUCKETS,
        )
        self.reloads = Gauge("autotune_backend_reloads", "Model reloads each backend caused or observed.")
        self.num_ctx = Gauge("autotune_effective_num_ctx", "Last effective num_ctx per model.")
        self.kv_type = Gauge("autotune_kv_type_info", "Last KV cache type per model (value is always 1).")
        self.truncations = Counter("autotune_truncation_events_total", "Requests a plugin flagged as truncated.")
        self.plugin_failures = Gauge("autotune_plugin_failures", "Isolated failures per plugin since start.")
        self.pressure = Gauge("autotune_pressure_tier", "Memory pressure tier (1 for the current tier).")
        self.stream_disconnects = Counter("autotune_client_disconnects_total", "Streams the client abandoned.")

    def all(self) -> list[_Metric]:
        return [value for value in vars(self).values() if isinstance(value, _Metric)]

    def render(self) -> str:
        lines: list[str] = []
        for metric in self.all():
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"
