"""Latency bookkeeping shared by the demo and the benchmarks."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of already sorted values (nearest rank)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class Recorder:
    """Latencies (seconds) and outcome counts of one run."""

    latencies: list[float] = field(default_factory=list)
    outcomes: Counter = field(default_factory=Counter)

    def record(self, seconds: float, outcome: str) -> None:
        self.latencies.append(seconds)
        self.outcomes[outcome] += 1

    def summary(self, elapsed_s: float | None = None) -> dict:
        ordered = sorted(self.latencies)
        result = {
            "count": len(ordered),
            "p50_ms": percentile(ordered, 50) * 1000,
            "p90_ms": percentile(ordered, 90) * 1000,
            "p99_ms": percentile(ordered, 99) * 1000,
            "p999_ms": percentile(ordered, 99.9) * 1000,
            "max_ms": (ordered[-1] * 1000) if ordered else math.nan,
            "outcomes": dict(self.outcomes),
        }
        if elapsed_s:
            result["rate_per_s"] = len(ordered) / elapsed_s
        return result
