"""Admission: how much work a process takes on at once, adapted to what it
measures, so that past capacity it serves at capacity and refuses the rest
at once (cheaply, with a retry hint) instead of queueing it.

`AdaptiveLimit` is a concurrency limit in the gradient style of Netflix's
concurrency-limits (and Envoy's adaptive concurrency filter): every window
(`window_s`, and at least `min_samples` calls) it compares the window's mean
latency with the baseline, the lowest latency seen in the last
`baseline_s`, and sets

    gradient = clamp(tolerance * baseline / mean, 0.5, 1)
    target   = limit * gradient + sqrt(limit)

and moves the limit a `smoothing` part of the way up to `target`, or all the
way down to it: the limit grows slowly while latency stays within
`tolerance` times the baseline, and shrinks at once (by at most half, plus
the square root, per window) when work queues. It only
grows while the limit is being used (at least half of it in flight): an idle
process does not earn a limit it never tried. The baseline is the minimum of
two half-windows, so it can rise again when the machine gets slower.

Everything is synchronous and takes the clock as an argument: one event
loop owns a limit, and the unit tests drive it with their own clock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class LimitSettings:
    #: The limit never goes below or above these.
    min_limit: int = 4
    max_limit: int = 64
    #: Where it starts.
    initial: int = 16
    #: The latency taken as "not queueing", as a multiple of the baseline.
    tolerance: float = 5.0
    #: How far each window moves the limit up towards its new value.
    smoothing: float = 0.2
    window_s: float = 0.1
    min_samples: int = 10
    #: How long the lowest latency seen stays the baseline (at most).
    baseline_s: float = 30.0

    def __post_init__(self) -> None:
        if not 1 <= self.min_limit <= self.initial <= self.max_limit:
            raise ValueError(
                f"need 1 <= min_limit ({self.min_limit}) <= initial ({self.initial}) "
                f"<= max_limit ({self.max_limit})"
            )
        if self.tolerance < 1.0:
            raise ValueError(f"tolerance must be at least 1, not {self.tolerance}")


class AdaptiveLimit:
    """A concurrency limit that follows measured latency (module docstring)."""

    def __init__(
        self, settings: LimitSettings = LimitSettings(), clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._limit = float(settings.initial)
        self.in_flight = 0
        now = clock()
        self._window_started = now
        self._window_sum = 0.0
        self._window_n = 0
        self._window_peak = 0  # the most in flight during the window
        self._min_current = math.inf
        self._min_previous = math.inf
        self._min_rotated = now

    @property
    def limit(self) -> int:
        return int(self._limit)

    @property
    def baseline_s(self) -> float:
        """The lowest latency seen lately (0 before the first call ends)."""
        lowest = min(self._min_current, self._min_previous)
        return 0.0 if lowest == math.inf else lowest

    def try_acquire(self) -> bool:
        """Takes a place for one call, or False: the limit is reached."""
        if self.in_flight >= int(self._limit):
            return False
        self.in_flight += 1
        if self.in_flight > self._window_peak:
            self._window_peak = self.in_flight
        return True

    def release(self, latency_s: float | None) -> None:
        """Gives the place back; `latency_s`: how long the call took, or None
        when it says nothing about this process's load (it failed early, or
        waited on something else)."""
        self.in_flight -= 1
        if latency_s is None:
            return
        now = self._clock()
        if now - self._min_rotated >= self.settings.baseline_s / 2:
            self._min_previous, self._min_current = self._min_current, math.inf
            self._min_rotated = now
        self._min_current = min(self._min_current, latency_s)
        self._window_sum += latency_s
        self._window_n += 1
        if (
            now - self._window_started >= self.settings.window_s
            and self._window_n >= self.settings.min_samples
        ):
            self._update(self._window_sum / self._window_n)
            self._window_started = now
            self._window_sum = 0.0
            self._window_n = 0
            self._window_peak = self.in_flight

    def _update(self, mean_s: float) -> None:
        s = self.settings
        gradient = max(0.5, min(1.0, s.tolerance * self.baseline_s / mean_s))
        if gradient >= 1.0 and self._window_peak < self._limit / 2:
            return  # not limited by the limit: nothing learnt about a higher one
        target = self._limit * gradient + math.sqrt(self._limit)
        if target > self._limit:  # up slowly, down at once
            target = (1 - s.smoothing) * self._limit + s.smoothing * target
        self._limit = max(float(s.min_limit), min(float(s.max_limit), target))
