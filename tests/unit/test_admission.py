"""The adaptive admission limit (libs/admission.py), on a clock the test
moves: it refuses past its limit, shrinks when latency rises above the
baseline's tolerance, grows back while the limit is used, does not grow
while idle, and lets the baseline rise again after a while."""

from __future__ import annotations

import pytest

from libs.admission import AdaptiveLimit, LimitSettings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def windows(limit: AdaptiveLimit, clock: Clock, latency_s: float, n: int, busy: bool = True):
    """`n` windows of calls that each took `latency_s`; `busy`: the limit
    is filled (as under load), else one call at a time."""
    for _ in range(n):
        clock.now += limit.settings.window_s * 1.01
        held = 0
        while (busy or held == 0) and limit.try_acquire():
            held += 1
        for _ in range(held):
            limit.release(latency_s)
        for _ in range(limit.settings.min_samples - held):
            assert limit.try_acquire()
            limit.release(latency_s)


def test_past_the_limit_a_call_is_refused_until_one_ends():
    limit = AdaptiveLimit(LimitSettings(min_limit=2, initial=2, max_limit=8), Clock())
    assert limit.try_acquire() and limit.try_acquire()
    assert not limit.try_acquire()
    limit.release(None)
    assert limit.try_acquire()
    assert limit.in_flight == 2


def test_latency_past_the_tolerance_shrinks_the_limit_down_to_its_floor():
    clock = Clock()
    limit = AdaptiveLimit(
        LimitSettings(min_limit=4, initial=32, max_limit=64, tolerance=2.0), clock
    )
    windows(limit, clock, 0.010, 1)  # the baseline: 10 ms
    before = limit.limit
    windows(limit, clock, 0.080, 4)  # 8x the baseline: queueing
    # Down at once: a window of such calls takes it to half, plus its square
    # root (the first window still averages in the calls before it).
    assert limit.limit <= before * 0.5 + before**0.5 * 0.5
    windows(limit, clock, 0.080, 20)
    assert limit.limit == 4


def test_latency_within_the_tolerance_grows_the_limit_while_it_is_used():
    clock = Clock()
    limit = AdaptiveLimit(LimitSettings(min_limit=4, initial=8, max_limit=40, tolerance=2.0), clock)
    windows(limit, clock, 0.010, 1)
    windows(limit, clock, 0.015, 200)  # grows by a fifth of sqrt(limit) a window
    assert limit.limit == 40


def test_an_idle_process_does_not_raise_its_limit():
    clock = Clock()
    limit = AdaptiveLimit(LimitSettings(min_limit=4, initial=8, max_limit=64), clock)
    windows(limit, clock, 0.010, 30, busy=False)
    assert limit.limit == 8


def test_the_baseline_is_forgotten_after_its_time_so_a_slower_machine_is_not_starved():
    clock = Clock()
    settings = LimitSettings(min_limit=4, initial=16, max_limit=64, tolerance=2.0, baseline_s=2.0)
    limit = AdaptiveLimit(settings, clock)
    windows(limit, clock, 0.005, 1)
    assert limit.baseline_s == 0.005
    windows(limit, clock, 0.050, 40)  # 4 s of slower calls: two half-windows
    assert limit.baseline_s == 0.050
    windows(limit, clock, 0.050, 60)
    assert limit.limit > 16  # 50 ms is the new normal: the limit grows again


def test_settings_out_of_order_are_refused():
    with pytest.raises(ValueError, match="min_limit"):
        LimitSettings(min_limit=8, initial=4, max_limit=16)
    with pytest.raises(ValueError, match="tolerance"):
        LimitSettings(tolerance=0.5)
