"""Paired ratios with a 95 % bootstrap confidence interval, and the words a result may be reported with.

The ratio of a pair is arm / baseline for the same prompt; a scenario's ratio is the geometric mean of
its pairs (so 2× faster and 2× slower cancel). The interval is the percentile bootstrap over pairs
(seeded, so a report is reproducible from its samples). An interval that contains 1 is "no measurable
difference", whatever the point estimate says.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import asdict, dataclass
from typing import Any

#: bootstrap resamples
RESAMPLES = 2000
#: fewer pairs than this: no interval (the run is too small to say anything)
MIN_PAIRS = 3


@dataclass
class Ratio:
    """arm/baseline over paired samples of one metric."""

    metric: str
    n: int
    ratio: float | None
    low: float | None
    high: float | None
    verdict: str
    lower_is_better: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        if self.ratio is None:
            return self.verdict
        if self.low is None or self.high is None:
            return f"×{self.ratio:.2f} (n={self.n}, {self.verdict})"
        return f"×{self.ratio:.2f} [{self.low:.2f}–{self.high:.2f}] {self.verdict}"


def geo_mean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def bootstrap_ci(ratios: list[float], *, resamples: int = RESAMPLES, seed: int = 1515) -> tuple[float, float]:
    """95 % percentile interval of the geometric mean of ``ratios``."""
    rng = random.Random(seed)
    logs = [math.log(r) for r in ratios]
    n = len(logs)
    means = sorted(sum(logs[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    low = means[int(0.025 * (resamples - 1))]
    high = means[math.ceil(0.975 * (resamples - 1))]
    return math.exp(low), math.exp(high)


def paired_ratio(
    metric: str,
    pairs: list[tuple[float | None, float | None]],
    *,
    lower_is_better: bool = True,
    resamples: int = RESAMPLES,
) -> Ratio:
    """``pairs`` are (arm, baseline) values of the same prompt; pairs with a missing or zero side are dropped."""
    ratios = [a / b for a, b in pairs if a is not None and b is not None and a > 0 and b > 0]
    n = len(ratios)
    if n == 0:
        return Ratio(metric, 0, None, None, None, "not measured", lower_is_better)
    point = geo_mean(ratios)
    if n < MIN_PAIRS:
        return Ratio(metric, n, point, None, None, "too few pairs for an interval", lower_is_better)
    if len(set(ratios)) == 1:  # deterministic (e.g. KV bytes): no noise to resample
        low = high = point
    else:
        low, high = bootstrap_ci(ratios, resamples=resamples)
    return Ratio(metric, n, point, low, high, verdict(point, low, high, lower_is_better), lower_is_better)


def verdict(point: float, low: float, high: float, lower_is_better: bool) -> str:
    if low <= 1.0 <= high:
        return "no measurable difference"
    better = high < 1.0 if lower_is_better else low > 1.0
    change = abs(1 - point) * 100
    return f"{change:.0f} % {'better' if better else 'worse'}"


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x (TTFT growth per turn or step)."""
    if len(points) < 2:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    den = sum((x - mx) ** 2 for x, _ in points)
    if den == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in points) / den
