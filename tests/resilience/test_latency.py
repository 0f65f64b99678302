"""LatencyWindow percentiles, HedgeTimer's delay, HedgeSchedule's timeline."""
from __future__ import annotations

import pytest

from grpcmesh.clock import FakeClock
from grpcmesh.config import Duration
from grpcmesh.config.policies import HedgeSettings
from grpcmesh.resilience import STOP, HedgeTimer, LatencyWindow, RetryBudget


def filled(n: int, now: float = 0.0, size: int = 1000) -> LatencyWindow:
    window = LatencyWindow(size=size)
    for i in range(1, n + 1):
        window.observe(i / 1000, now)  # 1 ms .. n ms
    return window


def test_no_percentile_until_100_samples() -> None:
    assert filled(99).percentile(95, 0.0) is None
    assert filled(100).percentile(95, 0.0) == pytest.approx(0.095)


def test_nearest_rank() -> None:
    window = filled(1000)
    assert window.percentile(50, 0.0) == pytest.approx(0.5)
    assert window.percentile(99.9, 0.0) == pytest.approx(0.999)
    assert window.percentile(99, 0.0) == pytest.approx(0.99)


def test_floor_of_one_ms() -> None:
    window = LatencyWindow()
    for _ in range(100):
        window.observe(0.0001, 0.0)
    assert window.percentile(99, 0.0) == 0.001


def test_bounded_ring_and_age() -> None:
    window = filled(100, size=100)
    for _ in range(50):
        window.observe(1.0, 5.0)  # replaces the 50 oldest (1..50 ms)
    assert len(window._samples) == 100
    assert window.percentile(50, 5.0) == pytest.approx(0.1)  # 51..100 ms and fifty 1 s
    assert window.count(31.0) == 50  # the first 50 samples are over 30 s old
    assert window.percentile(50, 31.0) is None


def test_timer_fixed_and_percentile() -> None:
    fixed = HedgeTimer(HedgeSettings(Duration(20)))
    assert fixed.delay(0.0) == 0.02
    window = filled(99)
    timer = HedgeTimer(HedgeSettings(None, 95), window, refresh=1.0)
    assert timer.delay(0.0) is None  # too few calls: no hedging
    window.observe(0.1, 0.0)
    assert timer.delay(0.5) is None  # cached until the next refresh
    assert timer.delay(1.0) == pytest.approx(0.095)
    with pytest.raises(ValueError):
        HedgeTimer(HedgeSettings(None, 95))


def test_schedule_spaces_hedges_and_draws_from_the_budget() -> None:
    timer = HedgeTimer(HedgeSettings(Duration(20), max_attempts=3))
    budget = RetryBudget(FakeClock(), ratio=0.2, min_per_second=10)
    call = timer.schedule(10.0)
    assert call.next_at == pytest.approx(10.02)
    assert not call.fire(10.01, budget)
    assert call.fire(10.02, budget) and call.sent == 2
    assert call.next_at == pytest.approx(10.04)
    assert call.fire(10.05, budget) and call.sent == 3
    assert call.next_at is None and not call.fire(11.0, budget)
    assert budget.totals() == (0, 2)


def test_schedule_stops_on_an_empty_budget_pushback_or_a_winner() -> None:
    timer = HedgeTimer(HedgeSettings(Duration(20), max_attempts=5))
    empty = RetryBudget(FakeClock(), ratio=0.2, min_per_second=0)
    call = timer.schedule(0.0)
    assert not call.fire(1.0, empty) and call.next_at is None
    call = timer.schedule(0.0)
    call.pushback(300, 0.01)
    assert call.next_at == pytest.approx(0.31)
    call.pushback(STOP, 0.02)
    assert call.next_at is None
    call = timer.schedule(0.0)
    call.stop()
    assert call.next_at is None
    warming = HedgeTimer(HedgeSettings(None, 95), LatencyWindow()).schedule(0.0)
    assert warming.next_at is None
