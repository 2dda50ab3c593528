"""Exponential backoff: the one definition for every retry loop (scan's
re-drive of received scans, score's outbox delivery)."""

from __future__ import annotations

import random


def exponential(attempt: int, *, base_s: float, cap_s: float, jitter: float = 0.0) -> float:
    """`base_s` x 2^attempt, at most `cap_s`, then times a uniform factor in
    [1 - jitter, 1 + jitter] (so replicas retrying together drift apart)."""
    delay = min(cap_s, base_s * 2.0 ** min(max(attempt, 0), 62))
    if jitter:
        delay *= random.uniform(1.0 - jitter, 1.0 + jitter)
    return delay


class Backoff:
    """Consecutive delays from `low` doubling up to `high` seconds; `reset()`
    after a success starts again from `low`."""

    def __init__(self, low: float, high: float, jitter: float = 0.0) -> None:
        self._low = low
        self._high = high
        self._jitter = jitter
        self._attempt = 0

    def next(self) -> float:
        delay = exponential(self._attempt, base_s=self._low, cap_s=self._high, jitter=self._jitter)
        self._attempt += 1
        return delay

    def reset(self) -> None:
        self._attempt = 0
