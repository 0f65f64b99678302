"""RetryBudget: retries <= ratio x calls + min_per_second x window, over a sliding 10 s."""
from __future__ import annotations

import pytest

from grpcmesh.clock import FakeClock
from grpcmesh.resilience import RetryBudget


def drain(budget: RetryBudget) -> int:
    n = 0
    while budget.withdraw():
        n += 1
    return n


def test_the_floor_alone() -> None:
    budget = RetryBudget(FakeClock(), ratio=0.2, min_per_second=10)
    assert drain(budget) == 100  # 10/s x 10 s, with no call at all
    assert budget.exhausted == 1 and budget.totals() == (0, 100)


def test_a_share_of_calls() -> None:
    budget = RetryBudget(FakeClock(), ratio=0.2, min_per_second=0)
    for _ in range(99):
        budget.deposit()
    assert drain(budget) == 19  # 19.8 allowed: whole retries only
    for _ in range(1):
        budget.deposit()
    assert drain(budget) == 1  # 100 calls: 20
    assert budget.balance() == pytest.approx(0.0)


def test_retries_and_calls_leave_the_window() -> None:
    clock = FakeClock(1000.0)
    budget = RetryBudget(clock, ratio=0.5, min_per_second=0)
    for _ in range(10):
        budget.deposit()
    assert drain(budget) == 5
    clock.advance(9.0)  # the slot of second 1000 still counts at 1009.x
    assert not budget.withdraw()
    clock.advance(1.0)  # 1010: second 1000 has left the window, calls and retries alike
    assert budget.totals() == (0, 0)
    assert not budget.withdraw()  # no calls, no floor: nothing
    budget.deposit()
    budget.deposit()
    assert budget.withdraw() and not budget.withdraw()


def test_a_slot_is_reused_after_a_full_round() -> None:
    clock = FakeClock(1000.0)
    budget = RetryBudget(clock, ratio=1.0, min_per_second=0, window=3)
    budget.deposit()
    clock.advance(3.0)  # the same slot index, another second
    budget.deposit()
    assert budget.totals() == (1, 0)


@pytest.mark.parametrize(("ratio", "floor", "window"), [(0, 1, 10), (1.5, 1, 10), (0.2, -1, 10),
                                                        (0.2, 1, 0)])
def test_bad_settings(ratio: float, floor: float, window: int) -> None:
    with pytest.raises(ValueError):
        RetryBudget(FakeClock(), ratio, floor, window)
